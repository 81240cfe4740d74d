"""`allx-edge serve`: the sample workflow as a small local web page and JSON API (FastAPI + uvicorn)."""
