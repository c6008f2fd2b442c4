from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("balancers", "0007_prompt_logging"),
    ]

    operations = [
        migrations.AddField(
            model_name="balancer",
            name="auto_exclusions",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Auto mode: model names or instance ids auto never chooses, whatever "
                "their score.",
                verbose_name="never choose",
            ),
        ),
    ]
