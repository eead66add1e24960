"""dlcourse from Python (a notebook, Colab, a script): the commands as functions and objects.

    import dlcourse
    run = dlcourse.train("configs/churn_mlp.yaml", overrides={"optim.lr": 0.01})
    run.summary, run.history["dev.loss"], run.model, run.plot(), run.evaluate("test")
    dlcourse.compare([run, dlcourse.open_run("runs/churn_mlp-20250101-120000")]).figure
    dlcourse.grade("configs/assignments/churn.assignment.yaml", "handins/", out="graded")

They call the same library functions as the commands and use the same run folders. Errors
are dlcourse's exceptions (errors.py: ConfigError naming the key, UserError, ...), raised,
never turned into an exit code.
"""

from dlcourse.api.experiments import Comparison, compare, lr_find, sweep
from dlcourse.api.grading import Gradebook, grade
from dlcourse.api.run import History, Run, open_run, train

__all__ = ["Comparison", "Gradebook", "History", "Run", "compare", "grade", "lr_find",
           "open_run", "sweep", "train"]  # fmt: skip
