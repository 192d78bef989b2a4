"""The thin REST submit API (FastAPI): validate, authorize, write ledger rows, enqueue, read back.

Not built yet; until then clients inside a deployment use `tasks.judge.delay(...)`.
"""
