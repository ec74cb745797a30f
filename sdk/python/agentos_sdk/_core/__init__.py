"""The SDK's private core: configuration, the HTTP transport, the gateway client, the step
journal, runs, tools and the worker loop. Import from `agentos_sdk`, not from here."""
