"""Provider credentials (one key per provider, for calling its models by name) and the instance
providers of targetgroups.providers."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("targetgroups", "0003_capacity_pricing")]

    operations = [
        migrations.AlterField(
            model_name="instance",
            name="provider",
            field=models.CharField(
                choices=[
                    ("openai", "OpenAI-compatible"),
                    ("anthropic", "Anthropic"),
                    ("simulator", "Simulator (built-in, offline)"),
                    ("builtin", "Built-in model"),
                    ("google", "Google Gemini"),
                    ("mistral", "Mistral"),
                    ("deepseek", "DeepSeek"),
                    ("xai", "xAI"),
                    ("groq", "Groq"),
                    ("perplexity", "Perplexity"),
                    ("openrouter", "OpenRouter"),
                    ("together", "Together AI"),
                    ("fireworks", "Fireworks AI"),
                    ("azure", "Azure OpenAI"),
                    ("ollama", "Ollama"),
                ],
                default="openai",
                max_length=20,
            ),
        ),
        migrations.AlterField(
            model_name="instance",
            name="options",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Simulator knobs: latency_ms, error_rate, down, tokens_per_second. Azure "
                "OpenAI: api_version.",
            ),
        ),
        migrations.CreateModel(
            name="ProviderCredential",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "provider",
                    models.CharField(
                        choices=[
                            ("openai", "OpenAI"),
                            ("anthropic", "Anthropic"),
                            ("google", "Google Gemini"),
                            ("mistral", "Mistral"),
                            ("deepseek", "DeepSeek"),
                            ("xai", "xAI"),
                            ("groq", "Groq"),
                            ("perplexity", "Perplexity"),
                            ("openrouter", "OpenRouter"),
                            ("together", "Together AI"),
                            ("fireworks", "Fireworks AI"),
                            ("azure", "Azure OpenAI"),
                            ("ollama", "Ollama"),
                            ("custom", "OpenAI-compatible server (vLLM, llama.cpp, LM Studio)"),
                        ],
                        max_length=20,
                        unique=True,
                    ),
                ),
                (
                    "base_url",
                    models.URLField(
                        blank=True,
                        help_text="Empty: the provider's own (required for Azure OpenAI and a "
                        "custom server).",
                        max_length=500,
                    ),
                ),
                (
                    "api_key_encrypted",
                    models.TextField(
                        blank=True,
                        default="",
                        editable=False,
                        help_text="The provider API key, encrypted. Write-only: never shown again.",
                    ),
                ),
                (
                    "api_version",
                    models.CharField(
                        blank=True,
                        help_text="Azure OpenAI only: the api-version query value; empty: "
                        "2024-10-21.",
                        max_length=40,
                    ),
                ),
                ("enabled", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"ordering": ["provider"]},
        ),
    ]
