"""python -m models: prints README's model table (what each name is, parameters, FLOPs)."""
from models import model_table

print(model_table())
