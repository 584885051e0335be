# WSGI entry point for Keystone under gunicorn (scripts/keystone-dev start).
# keystone.wsgi.api parses the *process* argv with oslo.config at import time;
# under gunicorn that is gunicorn's argv ("--bind ..."), so every worker would
# exit 2 ("unrecognized arguments") and be restarted forever. Clear it first.
# The config file comes from OS_KEYSTONE_CONFIG_FILES.
import sys

sys.argv = sys.argv[:1]
from keystone.wsgi.api import application  # noqa: E402,F401
