"""Small helpers the lesson scripts share; the lessons themselves (data, model, train, test) are in the lesson files.

- cli.py     the flags every training script shares, checked values, one-line errors (T01-T05)
- device.py  CUDA, then MPS, then the CPU; seeding (T01-T05)
- data.py    finding, downloading and checking MNIST, FashionMNIST and CIFAR-10 (T01, T02, T03, T05)
- run.py     TrainingRun: run folder, checkpoints, resume, Ctrl-C, divergence, metrics, figures (T01, T02, T03, T05)
- images.py  your own photo in, a prediction out: the predict.py scripts' shared steps (T01, T02, T03)
"""
