"""What a running ingress is built from: settings, state, client addresses, mail."""
