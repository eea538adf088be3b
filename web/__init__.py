"""Everything that speaks HTTP: the chat API, the CLI, the OpenAI simulator, the load tester."""
