# The one application image: the API, both workers, beat, Flower and migrations run from it.
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 app

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY api ./api
COPY worker ./worker
COPY common ./common
COPY celeryconfig.py gunicorn.conf.py alembic.ini ./
COPY migrations ./migrations
COPY deploy ./deploy
RUN pip install --no-cache-dir -c constraints.txt . \
 && mkdir -p /staging /app/var /secrets \
 && chown app:app /staging /app/var /secrets

USER app
ENV PYTHONUNBUFFERED=1 LOG_FORMAT=json GUNICORN_BIND=0.0.0.0:5000
EXPOSE 5000
CMD ["gunicorn", "api:create_app()"]
