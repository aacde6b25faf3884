"""FrameLedger REST API for signing apps and third parties (FastAPI)."""
