import sys
from pathlib import Path

# Spawned child processes import their target functions from orm_broker_children.
HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
