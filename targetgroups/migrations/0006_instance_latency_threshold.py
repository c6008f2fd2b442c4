import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("targetgroups", "0005_instance_capabilities"),
    ]

    operations = [
        migrations.AddField(
            model_name="instance",
            name="latency_threshold_ms",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Time to first byte (ms) after which the next target is tried, when the "
                "route sets none; empty: no threshold.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(10),
                    django.core.validators.MaxValueValidator(600000),
                ],
            ),
        ),
    ]
