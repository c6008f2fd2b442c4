from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0014_api_key_allow_direct_models"),
    ]

    operations = [
        migrations.AddField(
            model_name="storedresponse",
            name="input_items",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="The request's own input, as GET /v1/responses/{id}/input_items lists "
                "it.",
            ),
        ),
    ]
