"""``app`` for uvicorn and gunicorn workers (the schema is migrated once, before they start)."""
from service.app import create_app

app = create_app(migrate=False)
