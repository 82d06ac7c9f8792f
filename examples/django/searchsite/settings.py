"""Settings of the example site: one app (library), PostgreSQL through psycopg 3.

Connection from the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE; any database: each one
with an active auto-encoding is drained); the app's tables, Django's migration records included,
live in schema APP_SCHEMA.
"""
import os

SECRET_KEY = "example-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["library"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

APP_SCHEMA = os.environ.get("APP_SCHEMA", "lr_example_django")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "postgres"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", ""),
        "PORT": os.environ.get("PGPORT", ""),
        "OPTIONS": {"options": f"-c search_path={APP_SCHEMA},public"},
    }
}

# Models registered by a superuser (lr_register_model; scripts/examples.sh does it).
LIGHTRETRIEVER_DENSE_MODEL = os.environ.get("LR_DENSE_MODEL", "all-minilm-l6-v2")
LIGHTRETRIEVER_SPARSE_MODEL = os.environ.get("LR_SPARSE_MODEL", "splade-tiny")
LIGHTRETRIEVER_RERANKER = os.environ.get("LR_RERANKER", "pe-rank-tiny")
