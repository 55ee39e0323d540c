"""The project's escape corpus: attacks on the jail, and ordinary jobs it must let through.

Each attack is job source with placeholders the test fills in: {marker} (a file the attack
tries to create), {canary} (a file whose secret content it tries to read), {port} (a local
listener it tries to reach). Tests prove the attack had no effect, whatever exception it got.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attack:
    name: str
    category: str
    source: str
    contained: bool = False  # the jail's answer is to defuse it; the job may still finish


def _job(body: str) -> str:
    lines = body.strip("\n").splitlines()
    return "def run(crypten):\n" + "\n".join("    " + line for line in lines) + "\n"


def A(name: str, category: str, body: str, contained: bool = False) -> Attack:  # noqa: N802
    return Attack(name, category, _job(body), contained)


ATTACKS: list[Attack] = [
    # -- import smuggling ---------------------------------------------------------------
    A("import-os", "import", "import os\nos.system('touch {marker}')\nreturn 1"),
    A("from-import", "import", "from os import system\nsystem('touch {marker}')\nreturn 1"),
    A("dunder-import", "import", "os = __import__('os')\nos.system('touch {marker}')\nreturn 1"),
    A("builtins-dict-import", "import",
      "imp = __builtins__['__import__']\nimp('os').system('touch {marker}')\nreturn 1"),
    A("globals-of-api-function", "import",
      "g = crypten.load.__globals__\ng['os'].system('touch {marker}')\nreturn 1"),
    A("importlib-through-torch", "import",
      "m = torch.nn.functional.one_hot.__self__\nreturn str(m)"),
    A("sys-modules-through-crypten", "import", "return crypten.mpc.sys.modules['os'].getcwd()"),
    # the job's builtins have an __import__ (torch's C++ side imports through it): no route
    # from job code reaches it, and what it gives back is nothing
    A("import-torch-statement", "import", "import torch as t\nreturn t.load('{canary}')"),
    A("from-torch-import", "import", "from torch import load\nreturn load('{canary}')"),
    A("import-submodule-as", "import",
      "import torch.serialization as s\nreturn s.load('{canary}')"),
    A("fstring-import", "import",
      "return f\"{{__import__('os').system('touch {marker}')}}\""),
    A("builtins-import-through-frame", "import",
      "g = (x for x in [1])\nb = g.gi_frame.f_builtins\n"
      "return b['__import__']('os').system('touch {marker}')"),
    A("builtins-import-through-function", "import",
      "b = run.__builtins__\nreturn b['__import__']('os').system('touch {marker}')"),
    A("tensor-type-imports-by-name", "import",
      "t = torch.zeros(1).type('os.system')\nreturn str(t)"),
    # -- dunder walks -----------------------------------------------------------------------
    A("subclasses-walk", "dunder",
      "for c in ().__class__.__bases__[0].__subclasses__():\n"
      "    if c.__name__ == 'Popen':\n"
      "        c(['touch', '{marker}'])\nreturn 1"),
    A("module-dict", "dunder", "return crypten.__dict__"),
    A("tensor-class-init-globals", "dunder",
      "x = torch.zeros(1)\ng = x.__class__.__init__.__globals__\n"
      "g['__builtins__']['open']('{marker}', 'w').write('x')\nreturn 1"),
    A("own-function-globals", "dunder",
      "g = run.__globals__\ng['__builtins__']\nreturn 1"),
    A("frame-walk", "dunder",
      "x = crypten.cryptensor(torch.zeros(1))\nf = x.get_plain_text.__func__.__code__\n"
      "return str(f)"),
    A("cryptensor-private-share", "dunder",
      "x = crypten.load('secret', 0)\nreturn x._tensor.share"),
    A("type-of-facade", "dunder", "return crypten.__class__.__mro__"),
    # -- attribute tricks -------------------------------------------------------------------
    A("getattr-call", "attribute",
      "o = getattr(torch, 'load')\nreturn o('{canary}')"),
    A("format-field-access", "attribute",
      "return '{{0.__class__.__mro__}}'.format(crypten)"),
    A("format-map", "attribute",
      "return '{{x.__class__}}'.format_map({{'x': crypten}})"),
    A("fstring-conversion", "attribute",
      "x = crypten.load('secret', 0)\nreturn f'{{x!r}}'", contained=True),
    A("fstring-dunder", "attribute", "return f'{{crypten.__class__.__mro__}}'"),
    A("fstring-spec-dunder", "attribute",
      "x = crypten.load('secret', 0)\nreturn f'{{x:{{x.__class__}}}}'"),
    A("fstring-format-method", "attribute",
      "return f\"{{'{{0.__class__.__mro__}}'.format(crypten)}}\""),
    A("fstring-spec-field", "attribute",
      "x = crypten.load('secret', 0)\nreturn [f\"{{x:{{'{{0.__class__}}'}}}}\", "
      "f'{{x!s:>{{9}}}}', f'{{x=}}']", contained=True),
    A("fstring-share-spec", "attribute",
      "x = crypten.load('secret', 0)\nreturn f'{{x.share:.3}}'"),
    A("vars-call", "attribute", "return vars(torch)"),
    A("dir-call", "attribute", "return dir(crypten)"),
    A("share-attribute", "attribute",
      "x = crypten.load('secret', 0)\nreturn x.share.tolist()"),
    A("data-attribute", "attribute",
      "x = crypten.load('secret', 0)\nreturn x.data"),
    A("encoder-attribute", "attribute",
      "x = crypten.load('secret', 0)\nreturn x.encoder"),
    A("crypten-mpc-module", "attribute", "return str(crypten.mpc)"),
    A("attribute-store", "attribute",
      "crypten.load = crypten.cryptensor\nreturn 1"),
    # -- eval / exec / compile / type -------------------------------------------------------
    A("eval", "eval", "return eval(\"open('{canary}').read()\")"),
    A("exec", "eval", "exec(\"open('{marker}', 'w').write('x')\")\nreturn 1"),
    A("compile", "eval", "c = compile('1', 'x', 'eval')\nreturn 1"),
    A("type-call", "eval", "return type(crypten)"),
    A("type-new-class", "eval",
      "K = type('K', (), {{}})\nreturn K.__subclasses__()"),
    A("globals-call", "eval", "return globals()['torch']"),
    A("breakpoint", "eval", "breakpoint()\nreturn 1"),
    # -- pickle through torch or crypten loaders -------------------------------------------
    A("torch-load", "pickle", "return torch.load('{canary}')"),
    # a tag, never a path: a real job fails (no such binding); a dry run gives any tag it does
    # not hold mock data, so there the path is never opened either
    A("crypten-load-path", "pickle", "return crypten.load('{canary}', 0).get_plain_text(dst=0)",
      contained=True),
    A("crypten-load-from-party", "pickle",
      "return crypten.load_from_party('{canary}', src=0)"),
    A("torch-save", "pickle", "torch.save(torch.zeros(1), '{marker}')\nreturn 1"),
    A("crypten-save", "pickle",
      "crypten.save(crypten.cryptensor(torch.zeros(1)), '{marker}')\nreturn 1"),
    # -- torch escape hatches ---------------------------------------------------------------
    A("torch-hub", "torch", "return torch.hub.load('x/y', 'z')"),
    A("torch-jit", "torch", "return torch.jit.script"),
    A("torch-ops", "torch", "return torch.ops.aten"),
    A("torch-underscore-c", "torch", "return torch._C"),
    A("torch-from-file", "torch", "return torch.from_file('{canary}', size=8)"),
    A("cpp-extension", "torch", "return torch.utils.cpp_extension.load_inline('x', '')"),
    A("tensor-numpy-tofile", "torch",
      "torch.zeros(3).numpy().tofile('{marker}')\nreturn 1"),
    # -- crypten communicator and reveal misuse ---------------------------------------------
    A("raw-communicator", "reveal",
      "c = crypten.communicator.get()\nreturn c.get_rank()"),
    A("reveal-to-other-rank", "reveal",
      "x = crypten.load('secret', 0)\nreturn x.get_plain_text(dst=3)"),
    A("reveal-to-everyone", "reveal",
      "x = crypten.load('secret', 0)\nreturn x.get_plain_text()"),
    A("reveal-over-budget", "reveal",
      "x = crypten.load('secret', 0)\nout = []\nfor _ in range(100):\n"
      "    out.append(x.get_plain_text(dst=0))\nreturn out"),
    A("reveal-method", "reveal", "x = crypten.load('secret', 0)\nreturn x.reveal()"),
    A("model-decrypt", "reveal",
      "m = crypten.nn.Linear(2, 1)\nm.encrypt()\nm.decrypt()\nreturn 1"),
    A("return-encrypted", "reveal", "return crypten.load('secret', 0)"),
    # -- exfiltration through results or logs -----------------------------------------------
    A("print-share", "exfiltration",
      "x = crypten.load('secret', 0)\nprint(x)\nreturn str(x)", contained=True),
    A("repr-in-result", "exfiltration",
      "x = crypten.load('secret', 0)\nreturn [repr(x), str([x])]", contained=True),
    A("print-flood", "exfiltration",
      "for i in range(200000):\n    print('flood line', i)\nreturn 1", contained=True),
    A("huge-result", "exfiltration", "return 'a' * 200000000"),
    # -- resource exhaustion ----------------------------------------------------------------
    A("cpu-spin", "resource", "while True:\n    pass\nreturn 1"),
    A("memory-hog", "resource", "x = torch.zeros(100000, 100000)\nreturn 1"),
    A("list-hog", "resource", "x = [0] * 20000000000\nreturn 1"),
    A("recursion", "resource", "return run(crypten)"),
    A("exponential-string", "resource",
      "s = 'a'\nfor _ in range(60):\n    s = s + s\nreturn len(s)"),
    # -- file and network access ------------------------------------------------------------
    A("open-read", "file", "return open('{canary}').read()"),
    A("open-write", "file", "open('{marker}', 'w').write('x')\nreturn 1"),
    A("socket-through-distributed", "network",
      "d = torch.distributed\nreturn d.TCPStore('127.0.0.1', {port}, 2, False)"),
    A("new-process-group", "network",
      "return torch.distributed.new_group([0])"),
    # -- tricks against the static check and the human --------------------------------------
    Attack("homoglyph-name", "human",
           "def run(crypten):\n    \u043epen = 1\n    return open('{canary}').read()\n"),
    Attack("bidi-override", "human",
           "def run(crypten):\n    ok = 1  # \u202e } ;'erawlam'= ko {\n"
           "    return open('{canary}').read()\n"),
    Attack("zero-width-identifier", "human",
           "def run(crypten):\n    o\u200bpen = 1\n    return open('{canary}').read()\n"),
    Attack("decorator", "human",
           "@crypten.load\ndef run(crypten):\n    return 1\n"),
    Attack("default-argument", "human",
           "def run(crypten, x=open('{canary}').read()):\n    return x\n"),
    Attack("annotation", "human",
           "def run(crypten: open('{marker}', 'w')):\n    return 1\n"),
    Attack("module-level-code", "human",
           "open('{marker}', 'w').write('x')\ndef run(crypten):\n    return 1\n"),
    Attack("second-function", "human",
           "def helper():\n    return open('{canary}').read()\n"
           "def run(crypten):\n    return helper()\n"),
    Attack("lambda", "human", "def run(crypten):\n    f = lambda: open('{canary}').read()\n"
                              "    return f()\n"),
    Attack("try-swallow", "human",
           "def run(crypten):\n    try:\n        x = crypten.__class__\n    except Exception:\n"
           "        x = 1\n    return x\n"),
]

# Ordinary CrypTen jobs, unchanged: the jail must let every one through.
BENIGN: dict[str, str] = {
    "inference": _job("""
data = crypten.load('features', 0)
model = crypten.load_model('model')
return model(data).get_plain_text(dst=0)
"""),
    "argmax-softmax": _job("""
data = crypten.load('features', 0)
model = crypten.load_model('model')
out = model(data)
probs = out.softmax(1)
return {'probs': probs.get_plain_text(dst=0), 'label': out.argmax(dim=1).get_plain_text(dst=0)}
"""),
    "statistics": _job("""
x = crypten.load('features', 0)
mean = x.mean(0)
variance = ((x - mean) * (x - mean)).mean(0)
return {'n': x.size(0), 'mean': mean.get_plain_text(dst=0),
        'variance': variance.get_plain_text(dst=0), 'sum': x.sum(0).get_plain_text(dst=0)}
"""),
    "cat-features": _job("""
a = crypten.load('features', 0)
b = crypten.load('labelled', 0)
x = crypten.cat([a[:, :2], b[:6]], dim=1)
n, d = x.size()
return {'shape': [n, d], 'total': x.sum().get_plain_text(dst=0)}
"""),
    "labels-part": _job("""
y = crypten.load('labelled', 0, part='labels')
return y.mean().get_plain_text(dst=0)
"""),
    "train-by-hand": _job("""
x = crypten.load('labelled', 0, standardize=True)
y = crypten.load('labelled', 0, part='labels').unsqueeze(1)
n, d = x.size()
w = crypten.cryptensor(torch.zeros(d, 1))
for _ in range(5):
    err = x.matmul(w).sigmoid() - y
    w = w - x.t().matmul(err) * (1.0 / n)
return w.get_plain_text(dst=0)
"""),
    "train-optim": _job("""
x = crypten.load('labelled', 0, standardize=True)
y = crypten.load('labelled', 0, part='labels').unsqueeze(1)
model = crypten.nn.Sequential(crypten.nn.Linear(3, 4), crypten.nn.ReLU(), crypten.nn.Linear(4, 1))
model.encrypt(src=0)
model.train()
loss_fn = crypten.nn.BCEWithLogitsLoss()
optimizer = crypten.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
return loss.get_plain_text(dst=0)
"""),
    "comparisons-where": _job("""
x = crypten.load('features', 0)
positive = x > 0
clipped = crypten.where(positive, x, 0.0)
return {'positives': positive.sum().get_plain_text(dst=0),
        'clipped': clipped.max().get_plain_text(dst=0)}
"""),
    "plain-torch-and-lists": _job("""
weights = torch.tensor([0.5, -1.0, 2.0])
x = crypten.load('features', 0)
scaled = x * weights
rows = [scaled[i].sum() for i in range(3)]
total = crypten.stack(rows).sum()
print('progress', len(rows))
return {'total': total.get_plain_text(dst=0), 'w': weights.tolist()}
"""),
    "one-hot-and-matmul": _job("""
y = crypten.load('labelled', 0, part='labels').get_plain_text(dst=0).long()
onehot = torch.nn.functional.one_hot(y, 2).float()
x = crypten.load('labelled', 0)
class_sums = x.t().matmul(crypten.cryptensor(onehot))
return class_sums.get_plain_text(dst=0)
"""),
    "fstring-progress": _job("""
x = crypten.load('labelled', 0, standardize=True)
y = crypten.load('labelled', 0, part='labels').unsqueeze(1)
layer = crypten.nn.Linear(3, 1)
model = crypten.nn.Sequential(layer)
model.encrypt(src=0)
model.train()
loss_fn = crypten.nn.MSELoss()
for epoch in range(2):
    loss = loss_fn(model(x), y)
    model.zero_grad()
    loss.backward()
    model.update_parameters(0.1)
    print(f"epoch {epoch + 1:>2}/2: loss {loss.get_plain_text(dst=0)}")
return {'weight': layer.weight.get_plain_text(dst=0), 'bias': layer.bias.get_plain_text(dst=0)}
"""),
    "torch-full-and-where-first": _job("""
half = torch.full((3,), 0.5)
mask = torch.where(half > 0.4, half, torch.zeros_like(half))
x = crypten.load('features', 0)
return (x * mask).sum(0).get_plain_text(dst=0)
"""),
    "loops-and-ifs": _job("""
x = crypten.load('features', 0)
acc = x
for i in range(4):
    if i % 2 == 0:
        acc = acc + x
    else:
        acc = acc * 0.5
return acc.get_plain_text(dst=0)
"""),
}
