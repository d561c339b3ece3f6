"""Base client configuration (HOCON) stored as config row 1 and sent to the plugin at authentication."""

# Wire contract with the JetBrains plugin (AISE-TUDelft/code4me2, services/config/ConfigService.kt):
# - everything sits under the top-level `config` object;
# - each module and submodule needs id, class, name, type, description and enabled (the plugin reads
#   `enabled` with getBoolean before checking whether it exists, so it is effectively required);
# - `class` is the Kotlin class the plugin loads by reflection, so it must stay exactly as written;
# - each dependency needs moduleId and isHard.
# Module ids, classes, names, descriptions and dependencies follow the seeded config of the old server
# (code4me2-server src/database/init.sql @ d8fd23d8). The old module `type` values (aggregator, telemetry,
# model) were not category keys there; they get categories of their own below so every type resolves.
# models.available, languages, server and auth.google.clientId are placeholders: the server replaces them
# at authentication time (model registry, programming_language table, its own address, Google client id).

DEFAULT_CONFIG_HOCON: str = """config {
  modules {
    available = [
      {
        id = "BehavioralTelemetryAggregator"
        class = "me.code4me.services.modules.aggregators.BaseBehavioralTelemetryAggregator"
        name = "Behavioral Telemetry Aggregator"
        type = "aggregator"
        description = "Module for aggregating behavioral telemetry data"
        enabled = true
        submodules = [
          {
            id = "TimeSinceLastAcceptedCompletion"
            class = "me.code4me.services.modules.telemetry.behavioral.TimeSinceLastAcceptedCompletion"
            name = "Time Since Last Accepted Completion"
            type = "telemetry"
            description = "Calculates the time since the last accepted completion"
            enabled = true
          }
          {
            id = "TimeSinceLastShownCompletion"
            class = "me.code4me.services.modules.telemetry.behavioral.TimeSinceLastShownCompletion"
            name = "Time Since Last Shown Completion"
            type = "telemetry"
            description = "Calculates the time since the last shown completion"
            enabled = true
          }
          {
            id = "TypingSpeed"
            class = "me.code4me.services.modules.telemetry.behavioral.TypingSpeed"
            name = "Typing Speed"
            type = "telemetry"
            description = "Calculates the typing speed of the user"
            enabled = true
          }
        ]
        dependencies = [
          { moduleId = "TimeSinceLastAcceptedCompletion", isHard = false }
          { moduleId = "TimeSinceLastShownCompletion", isHard = false }
          { moduleId = "TypingSpeed", isHard = false }
        ]
      }
      {
        id = "ContextualTelemetryAggregator"
        class = "me.code4me.services.modules.aggregators.BaseContextualTelemetryAggregator"
        name = "Contextual Telemetry Aggregator"
        type = "aggregator"
        description = "Module for aggregating contextual telemetry data"
        enabled = true
        submodules = [
          {
            id = "EditorContextRetrievalModule"
            class = "me.code4me.services.modules.telemetry.contextual.EditorContextRetrievalModule"
            name = "Editor Context Retrieval Module"
            type = "telemetry"
            description = "Retrieves context from the editor"
            enabled = true
          }
        ]
        dependencies = [
          { moduleId = "EditorContextRetrievalModule", isHard = false }
        ]
      }
      {
        id = "contextAggregator"
        class = "me.code4me.services.modules.aggregators.BaseContextAggregator"
        name = "Context Aggregator"
        type = "aggregator"
        description = "Module for aggregating context data"
        enabled = true
        submodules = [
          {
            id = "FileContextRetrievalModule"
            class = "me.code4me.services.modules.context.FileContextRetrievalModule"
            name = "File Context Retrieval Module"
            type = "context"
            description = "Retrieves context from the file"
            enabled = true
          }
          {
            id = "MultiFileContextRetrievalModule"
            class = "me.code4me.services.modules.context.MultiFileContextRetrievalModule"
            name = "Multi File Context Retrieval Module"
            type = "context"
            description = "Retrieves context from multiple files"
            enabled = true
          }
        ]
        dependencies = [
          { moduleId = "FileContextRetrievalModule", isHard = true }
          { moduleId = "MultiFileContextRetrievalModule", isHard = false }
        ]
      }
      {
        id = "BaseModelAggregator"
        class = "me.code4me.services.modules.aggregators.BaseModelAggregator"
        name = "Model Aggregator"
        type = "aggregator"
        description = "Module for aggregating model data"
        enabled = true
        submodules = [
          {
            id = "ChatModel"
            class = "me.code4me.services.modules.model.ChatModel"
            name = "Model Selection and Settings for Chat"
            type = "model"
            description = "Module for selecting the appropriate model for chat interactions"
            enabled = true
          }
          {
            id = "CompletionModel"
            class = "me.code4me.services.modules.model.CompletionModel"
            name = "Model Selection and Settings for Code Completion"
            type = "model"
            description = "Module for selecting the appropriate model for code generation"
            enabled = true
          }
        ]
        dependencies = [
          { moduleId = "ChatModel", isHard = true }
          { moduleId = "CompletionModel", isHard = true }
        ]
      }
      {
        id = "AfterInsertionAggregator"
        class = "me.code4me.services.modules.aggregators.BaseAfterInsertionAggregator"
        name = "After Insertion Aggregator"
        type = "aggregator"
        description = "Module for aggregating after code insertion activities"
        enabled = true
        submodules = [
          {
            id = "GroundTruth"
            class = "me.code4me.services.modules.afterInsertion.GroundTruth"
            name = "Ground Truth Module"
            type = "afterInsertion"
            description = "Module for handling actions after code insertion"
            enabled = true
          }
          {
            id = "AcceptanceFeedback"
            class = "me.code4me.services.modules.afterInsertion.AcceptanceFeedback"
            name = "Code Insertion Acceptance Feedback Module"
            type = "afterInsertion"
            description = "Module for sending acceptance feedback after code insertion"
            enabled = true
          }
        ]
        dependencies = [
          { moduleId = "GroundTruth", isHard = false }
          { moduleId = "AcceptanceFeedback", isHard = false }
        ]
      }
    ]

    # Category key -> {path, description}; a module's `type` names one of these keys.
    categories {
      behavioralTelemetry {
        path = "me.code4me.services.modules.telemetry.behavioral"
        description = "Modules for behavioral telemetry collection"
      }
      contextualTelemetry {
        path = "me.code4me.services.modules.telemetry.contextual"
        description = "Modules for contextual telemetry collection"
      }
      context {
        path = "me.code4me.services.modules.context"
        description = "Modules for context retrieval"
      }
      aggregators {
        path = "me.code4me.services.modules.aggregators"
        description = "Modules for data aggregation"
      }
      models {
        path = "me.code4me.services.modules.model"
        description = "Modules for model selection and settings"
      }
      afterInsertion {
        path = "me.code4me.services.modules.afterInsertion"
        description = "Modules for actions after code insertion"
      }
      # Keys matching the `type` strings the modules above use.
      aggregator {
        path = "me.code4me.services.modules.aggregators"
        description = "Aggregator modules that combine the output of their submodules"
      }
      telemetry {
        path = "me.code4me.services.modules.telemetry"
        description = "Behavioral and contextual telemetry modules"
      }
      model {
        path = "me.code4me.services.modules.model"
        description = "Chat and completion model selection modules"
      }
    }
  }

  # Placeholder: replaced with this server's address at authentication.
  server {
    host = "127.0.0.1"
    port = 8000
    contextPath = ""
    timeout = 5000
  }

  # Placeholder: replaced with the configured Google OAuth client id at authentication.
  auth {
    google {
      clientId = ""
    }
  }

  # Placeholder: `available` is filled from the model registry at authentication.
  models {
    available = []
    systemPrompt = "You are a helpful assistant that provides information and answers questions to the best of your ability. Please respond in a clear and concise manner."
  }

  # Placeholder: filled from the programming_language table at authentication
  # ("<JetBrains language display name>" = <language_id>).
  languages {}
}
"""
