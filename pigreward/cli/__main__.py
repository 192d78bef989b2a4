"""`python -m pigreward.cli ...` (what the tests and ops scripts run)."""

from pigreward.cli import main

main()
