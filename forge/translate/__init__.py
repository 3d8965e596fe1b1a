"""Pure translators between the OpenAI shapes and each provider's wire protocol.

One module per provider, no I/O: a provider class (``serve/providers/``) does the
talking, a translator only maps dictionaries, so each is tested exhaustively on its own.
"""
