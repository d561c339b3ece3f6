"""HTTP and WebSocket: routes, dependencies, middleware and HTML pages (the only code that knows HTTP)."""
