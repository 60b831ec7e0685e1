"""The service's client: ``upload-pipeline upload FILE...`` from a shell, ``Client`` from a
program (docs/API.md, "Direct uploads"). It talks to the API over HTTP only and imports
nothing of the service."""

from client.transfer import Client, UploadFailed

__all__ = ["Client", "UploadFailed"]
