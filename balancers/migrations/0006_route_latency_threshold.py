import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("balancers", "0005_audit_entries"),
    ]

    operations = [
        migrations.AddField(
            model_name="route",
            name="latency_threshold_ms",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Time to first byte after which the next target is tried; empty: no "
                "threshold.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(10),
                    django.core.validators.MaxValueValidator(600000),
                ],
            ),
        ),
        migrations.AddField(
            model_name="route",
            name="hedge",
            field=models.BooleanField(
                default=False,
                help_text="Past the threshold, race the next target instead of cancelling this "
                "one: the first answer wins, the other is cancelled.",
            ),
        ),
    ]
