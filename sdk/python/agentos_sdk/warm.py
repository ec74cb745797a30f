"""`python3 -m agentos_sdk.warm`: the bootstrap a warm pool's sandbox runs until an agent
claims it (see `agentos_sdk._core.warm`)."""

from agentos_sdk._core.warm import main

if __name__ == "__main__":
    main()
