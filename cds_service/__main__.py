"""``python -m cds_service`` is the ``cds-service`` command."""
from .cli import main

main()
