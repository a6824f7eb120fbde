"""The HTTP API (FastAPI): ``citytwin.api.app.create_app`` assembles the routers."""
