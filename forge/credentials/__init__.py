"""Secrets the platform keeps for its tenants (a project's own provider keys), sealed at
rest with AES-GCM under the operator's keyring."""
