"""Built-in extension handlers, registered through the `exthandler` entry-point group."""

__all__: list[str] = []
