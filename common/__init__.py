"""Code shared by the API and the workers: settings, data, storage, staging, content checks."""
