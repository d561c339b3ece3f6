"""Who is calling: tokens, passwords, Google sign-in, email links, the auth chain."""
