"""``python -m scicontrast.cli``, as ``torchrun -m`` starts the training processes."""

import sys

from scicontrast.cli import main

sys.exit(main())
