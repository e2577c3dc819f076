# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`python -m promptkd_trainer <demo|train|eval> ...`, the same as the `promptkd` console script."""

import sys

from .cli import main


sys.exit(main())
