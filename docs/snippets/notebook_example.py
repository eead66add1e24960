import dlcourse

run = dlcourse.train(
    "configs/transactions_regression.yaml", overrides={"optim.lr": 0.02}, quiet=True
)
print(run)
print(run.summary.kept, run.summary.kept_epoch, run.summary.test)
print(run.history["dev.loss"])
print(run.model)
print(run.evaluate("test").metrics)
print(run.predict({"children": 3, "accounts": 5}).records())
