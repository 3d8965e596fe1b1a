"""People's identity: accounts, passwords, sessions, second factors, mailed tokens."""
