"""`python -m harness.report`: the report command (`harness.report.build.main`)."""
import sys

from harness.report.build import main

sys.exit(main())
