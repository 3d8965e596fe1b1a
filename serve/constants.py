"""Names the driver, the CLI and the application share, in a module that imports nothing:
`forge up`'s driver reads them without importing the application (serve/launcher.py)."""

APP_NAME = "promptforge"
DRAIN_MARGIN_S = 5.0  # after the drain timeout: ending streams and shipping usage
