import sys

from sashimi_core.evaluate.nll import main

sys.exit(main())
