import signal
import sys

try:
    from scripts.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command's modules import, before main() handles signals
    print("interrupted (SIGINT)", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)

sys.exit(main())
