import editkit
from editkit import api

setup = api.Setup(num_edits=5, scorers="tf", threads=1)
result = api.compare(api.CompareConfig(methods=("memoir", api.MethodChoice("ft", {"lr": 1e-3})), setup=setup, out="runs/api"))
print(result.table())                              # result.rows: a SummaryRow per method, metric, scorer, step
run = api.load_run("runs/api", method="memoir")    # the editor on its model, its state loaded; run.rows, run.config
batch = editkit.encode(run.loaded.tokenizer, ["The mother of Bob Dylan is"], padding_side="left")
print(run.loaded.tokenizer.decode(run.editor.generate(batch, max_new_tokens=5)[0]))
