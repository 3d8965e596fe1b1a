"""People: users, invitations, memberships, roles and groups of an organisation."""
