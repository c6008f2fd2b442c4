from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0013_capacity_pricing"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="allow_direct_models",
            field=models.BooleanField(
                default=False,
                help_text="Requests with this key may name any model of a provider with a stored "
                "credential "
                '(model="claude-sonnet-4-5", "groq/llama-3.3-70b-versatile"), not only balancers.',
                verbose_name="may call models by name",
            ),
        ),
    ]
