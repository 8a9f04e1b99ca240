"""`python -m services.cli ...` is `placematch ...`."""
from services.cli import main

main()
