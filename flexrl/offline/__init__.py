"""Offline learning from the trajectory store: Behaviour Cloning and a Decision Transformer.

    datamodule.OfflineDataModule   DataModule over a dataset version (DT windows, BC steps)
    bc.BCModule, dt.DTModule       LightningModules (network + loss); networks BCPolicy,
                                   DecisionTransformer take raw observations (normaliser inside)
    training.build / fit           Trainer wiring used by `flexrl finetune bc|dt`
    checkpoint                     policy.pt ("flexrl.bc/1", "flexrl.dt/1"), weights_only
    actors.BCActor, DTActor        evaluation adapters (reset / act / observe), `load_actor(path)`

Modules here import torch and lightning; nothing imports the CLI.
"""
