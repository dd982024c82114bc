"""`python -m sim.deploy --supernodes N [overrides]`: see `sim.deploy.launcher`."""

from sim.deploy.launcher import main

if __name__ == "__main__":
    raise SystemExit(main())
