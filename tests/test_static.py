"""The jail's static layer (node/jail/static.py): what passes, what it reports, what it refuses."""

from __future__ import annotations

import pickle
import textwrap

import pytest

from node.errors import ParleyError
from node.jail.static import (
    DYNAMIC,
    MAX_BYTES,
    FunctionInfo,
    JailRejected,
    Load,
    Loop,
    Reveal,
    check,
    is_dynamic,
)

BENIGN = '''\
def run(crypten):
    data = crypten.load("bc-data", 1)
    model = crypten.load_model("bc-model")
    w = crypten.cryptensor(torch.zeros(30, 1))
    for _ in range(30):
        err = (data.matmul(w)).sigmoid() - 1
        w = w - data.t().matmul(err) * (1.0 / 399)
    pred = model(data[:100].flatten(start_dim=1))
    return {"acc": pred.argmax(dim=1).get_plain_text(dst=0), "n": data.size(0)}
'''


def job(body: str, head: str = "def run(crypten):") -> str:
    """A job whose function body is ``body`` (dedented, then indented under ``head``)."""
    return head + "\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"


def rejected(source: str, entry: str | None = "run") -> JailRejected:
    with pytest.raises(JailRejected) as info:
        check(source, entry)
    return info.value


# -- the benign example ----------------------------------------------------------------------
def test_benign_example_passes_with_its_review_information() -> None:
    info = check(BENIGN, "run")
    assert isinstance(info, FunctionInfo)
    assert (info.name, info.params, info.lines) == ("run", ["crypten"], 9)
    assert info.reveals == [Reveal(9, 0, "pred.argmax(dim=1).get_plain_text(dst=0)")]
    assert info.loads == [Load(2, "bc-data", 1, "features", "dataset"),
                          Load(3, "bc-model", None, None, "model")]
    assert info.loops == [Loop(5, "for", 30, nesting=0, parent=None)]
    assert info.warnings == []
    assert info.docstring is None


def test_check_is_repeatable() -> None:
    assert check(BENIGN, "run") == check(BENIGN, "run")


def test_entry_none_accepts_any_name() -> None:
    assert check(BENIGN.replace("def run", "def train"), None).name == "train"


# -- benign jobs that must pass --------------------------------------------------------------
BENIGN_JOBS = {
    "nested-range-loops": """
        total = 0
        for i in range(3):
            for j in range(2, 10, 2):
                total = total + i * j
        return total
    """,
    "list-comprehension": """
        xs = [x * 2 for x in range(5) if x > 1]
        ys = {k: v for k, v in zip(["a", "b"], [1, 2])}
        zs = sum(x for x in xs)
        return {"xs": xs, "ys": ys, "zs": zs, "s": {1, 2}}
    """,
    "dict-result-slicing-cat": """
        a = crypten.load("left", 0)
        b = crypten.load("right", 1)
        both = crypten.cat([a, b], dim=1)
        head = both[:10, 1:3]
        tail = both[-5:]
        step = both[::2]
        last = both[..., 0]
        return {"head": head.get_plain_text(dst=0), "n": both.size(0), "t": tail.size(),
                "s": step.size(), "l": last.size()}
    """,
    "arithmetic-comparisons-if-else": """
        x = 3
        y = (x + 1) * 2 - 4 / 2 // 1 % 5 ** 2
        y += 1
        y -= 2
        y *= 3
        if x > 2 and not y < 0 or x == 1:
            z = 1
        elif x >= 10:
            z = 2
        else:
            z = -x if x != 0 else +x
        return [z, x is None, x is not None, x in [1, 2], x not in (3,), 1 <= x < 4]
    """,
    "print-progress": """
        for i in range(3):
            print("progress", i)
            if i == 1:
                continue
            if i == 2:
                break
            pass
    """,
    "docstring": '''
        """Train a logistic regression on the bound data; reveal the weights to rank 0."""
        w = crypten.cryptensor(torch.zeros(3, 1))
        return w.get_plain_text(dst=0)
    ''',
    "bitwise-masks-and-matmul": """
        a = torch.ones(3)
        b = torch.zeros(3)
        mask = (a > 0) & (b < 1) | (a == b) ^ (a != b)
        return {"m": mask, "p": a @ b, "shift": 1 << 3 >> 1, "inv": ~1}
    """,
    "training-with-crypten-nn": """
        x = crypten.load("features", 0)
        y = crypten.load("labels", 1, part="labels")
        model = crypten.nn.Linear(30, 1)
        model.encrypt()
        model.train()
        loss_fn = crypten.nn.BCELoss()
        optimizer = crypten.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(5):
            out = model(x).sigmoid()
            loss = loss_fn(out, y)
            model.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        return loss.get_plain_text(dst=0).item()
    """,
    "while-with-counter": """
        i = 0
        while i < 10:
            i = i + 1
        return i
    """,
    "builtins-that-are-safe": """
        xs = sorted(reversed(list(range(4))))
        pairs = list(enumerate(zip(xs, map(abs, xs))))
        it = iter(xs)
        first = next(it)
        return [len(xs), min(xs), max(xs), round(1.5), pow(2, 3), divmod(7, 2), any(xs),
                all(xs), chr(65), ord("A"), repr(first), str(1), int("2"), float("3"),
                bool(0), tuple(xs), dict(a=1), set(xs), isinstance(first, int),
                list(filter(bool, xs)), pairs, "%d items" % len(xs), b"bytes", 1j, None]
    """,
    "non-ascii-in-strings-and-comments": '''
        """Entraîne le modèle — 学习."""
        label = "température °C"  # déjà vu: π ≈ 3.14
        return label
    ''',
    "underscore-throwaway-name": """
        for _ in range(2):
            pass
        xs = [0 for _ in range(3)]
        return xs
    """,
    "method-named-copy-select-trace-chunk": """
        t = torch.ones(3, 3)
        return [t.trace(), t.select(0, 1), t.chunk(3), [1].copy(), {"a": 1}.copy()]
    """,
    "f-strings": """
        x = crypten.cryptensor(torch.zeros(3))
        loss = x.sum().get_plain_text(dst=0)
        width = 8
        names = ["a", "b"]
        for epoch in range(3):
            print(f"epoch {epoch + 1}/3: loss {loss}")
        lines = [f"{name!s:<{width}}|{len(name):>{width - 2}d}" for name in names]
        return [f"{loss!r}", f"{width=}", f"{3.14159:.{2}f}", f"{'x' if width else 'y'}",
                f"température {width}°C", f"{{literal braces}}", f"{[n.upper() for n in names]}",
                lines]
    """,
    "layer-weights-and-bias": """
        layer = crypten.nn.Linear(3, 1)
        start = layer.weight.tolist()
        model = crypten.nn.Sequential(layer)
        model.encrypt(src=0)
        return {"start": start, "weight": layer.weight.get_plain_text(dst=0),
                "bias": layer.bias.get_plain_text(dst=0)}
    """,
}


@pytest.mark.parametrize("body", BENIGN_JOBS.values(), ids=BENIGN_JOBS.keys())
def test_benign_jobs_pass(body: str) -> None:
    info = check(job(body), "run")
    assert info.name == "run"


def test_the_demo_jobs_pass() -> None:
    import inspect

    from node import demo

    for fn in (demo.encrypted_inference, demo.train_logistic_regression, demo.row_statistics):
        info = check(inspect.getsource(fn), fn.__name__)
        assert info.loads and info.reveals
        assert all(r.dst is not None for r in info.reveals)


def test_docstring_is_reported() -> None:
    info = check(job(BENIGN_JOBS["docstring"]), "run")
    assert info.docstring == ("Train a logistic regression on the bound data; reveal the "
                              "weights to rank 0.")


def test_torch_may_be_a_second_parameter() -> None:
    info = check(job("return torch.zeros(1)", head="def run(crypten, torch):"), "run")
    assert info.params == ["crypten", "torch"]


def test_crlf_and_lone_cr_count_as_line_breaks() -> None:
    crlf = BENIGN.replace("\n", "\r\n")
    assert check(crlf, "run").reveals[0].line == 9
    err = rejected("def run(crypten):\r    x = 1\r    import os\r")
    assert (err.rule, err.line) == ("no-imports", 3)


# -- review information ----------------------------------------------------------------------
def test_loops_report_bounds_nesting_and_parents() -> None:
    info = check(job("""
        for i in range(3):
            for j in range(2, 10, 2):
                xs = [k for k in range(7)]
        for x in [1, 2, 3, 4]:
            pass
        n = 5
        for i in range(n):
            pass
        while n > 0:
            n = n - 1
    """), "run")
    assert info.loops == [
        Loop(2, "for", 3, nesting=0, parent=None),
        Loop(3, "for", 4, nesting=1, parent=0),
        Loop(4, "for", 7, nesting=2, parent=1, comprehension=True),
        Loop(5, "for", 4, nesting=0, parent=None),
        Loop(8, "for", None, nesting=0, parent=None),
        Loop(10, "while", None, nesting=0, parent=None),
    ]
    assert "line 10: while loop without a literal bound" in info.warnings
    assert any(w.startswith("line 8: for loop over `range(n)` without a literal bound")
               for w in info.warnings)


def test_reveal_without_dst_goes_to_everyone_and_warns() -> None:
    info = check(job("""
        x = crypten.cryptensor(torch.zeros(2))
        a = x.get_plain_text()
        b = x.get_plain_text(dst=None)
        return a
    """), "run")
    assert [r.dst for r in info.reveals] == [None, None]
    assert info.reveals[0] == Reveal(3, None, "x.get_plain_text()")
    assert "line 3: reveals to every party (get_plain_text() without dst)" in info.warnings
    assert "line 4: reveals to every party (get_plain_text() without dst)" in info.warnings


def test_reveal_dst_literal_positional_and_dynamic() -> None:
    info = check(job("""
        x = crypten.cryptensor(torch.zeros(2))
        r = 1
        a = x.get_plain_text(1)
        b = x.get_plain_text(dst=r)
        c = x.get_plain_text(dst=-1)
        for i in range(2):
            d = x.get_plain_text(dst=0)
    """), "run")
    dsts = [r.dst for r in info.reveals]
    assert dsts[0] == 1 and dsts[2] == -1 and dsts[3] == 0
    assert is_dynamic(dsts[1]) and dsts[1] == "dynamic"
    assert any(w.startswith("line 5: reveals to a computed rank (dst=r)") for w in info.warnings)
    assert ("line 8: get_plain_text() inside a loop: it reveals on every iteration"
            in info.warnings)


def test_loads_report_tag_src_part_and_dynamic_values() -> None:
    info = check(job("""
        tag = "bc" + "-data"
        rank = 1
        a = crypten.load(tag, 1)
        b = crypten.load("x", src=rank)
        c = crypten.load("y", 0, part="labels")
        d = crypten.load(tag="z")
        e = crypten.load_model(tag)
        f = crypten.load("dynamic", 0)
    """), "run")
    a, b, c, d, e, f = info.loads
    assert is_dynamic(a.tag) and a.src == 1 and a.kind == "dataset"
    assert b.tag == "x" and is_dynamic(b.src)
    assert c == Load(6, "y", 0, "labels", "dataset")
    assert d == Load(7, "z", None, "features", "dataset")
    assert is_dynamic(e.tag) and e.kind == "model" and e.src is None and e.part is None
    assert f.tag == "dynamic" and not is_dynamic(f.tag)   # a literal tag, not the marker
    assert ("line 4: the tag is computed, not a literal: the reviewer cannot tell which asset "
            "is read") in info.warnings
    assert "line 8: the tag is computed, not a literal: the reviewer cannot tell which asset " \
           "is read" in info.warnings
    assert any(w.startswith("line 5: the source rank is computed") for w in info.warnings)
    assert repr(DYNAMIC) == "DYNAMIC"


# -- the error type --------------------------------------------------------------------------
def test_jail_rejected_reads_well_and_is_a_parley_error() -> None:
    err = rejected(job("""
        x = 1
        y = x.__class__
    """))
    assert isinstance(err, ParleyError)
    assert err.problem_type == "https://parley.example/problems/jail-rejected"
    assert err.http_status == 422
    assert (err.line, err.rule) == (3, "no-underscore")
    assert str(err) == ("line 3: rule 'no-underscore': `x.__class__` — names and attributes "
                        "starting with '_' are not allowed")
    assert err.message == str(err)
    again = pickle.loads(pickle.dumps(err))
    assert (again.line, again.rule, str(again)) == (err.line, err.rule, str(err))


def test_source_must_be_text() -> None:
    with pytest.raises(TypeError):
        check(b"def run(crypten): pass", "run")  # type: ignore[arg-type]


# -- rules and their attacks -----------------------------------------------------------------
def body(text: str) -> str:
    return job(text)


ATTACKS: list[tuple[str, str, str, int]] = [
    # id, source, rule, line
    ("syntax", "def run(crypten)\n    pass\n", "syntax", 1),
    ("syntax-indent", "def run(crypten):\npass\n", "syntax", 2),
    ("syntax-parens", body("x = " + "(" * 250 + "1" + ")" * 250), "syntax", 2),
    ("empty", "", "one-function", 1),
    # imports
    ("import", body("import os"), "no-imports", 2),
    ("from-import", body("x = 1\nfrom x import y"), "no-imports", 3),
    ("import-top-level", "import os\n" + BENIGN, "no-imports", 1),
    ("dunder-import", body("m = __import__('os')"), "no-imports", 2),
    # dunder walks
    ("subclasses", body("s = ().__class__.__bases__[0].__subclasses__()"), "no-underscore", 2),
    ("crypten-dict", body("d = crypten.__dict__"), "no-underscore", 2),
    ("globals-attr", body("f = torch.zeros\ng = f.__globals__"), "no-underscore", 3),
    ("builtins-name", body("b = __builtins__"), "no-underscore", 2),
    ("underscore-keyword", body("d = dict(__class__=1)"), "no-underscore", 2),
    ("underscore-function", "def _run(crypten):\n    pass\n", "no-underscore", 1),
    ("underscore-param", "def run(crypten, _x):\n    pass\n", "no-underscore", 1),
    ("underscore-local", body("_secret = 1"), "no-underscore", 2),
    ("private-attr", body("x = crypten.cryptensor(torch.zeros(1))\ny = x._tensor"),
     "no-underscore", 3),
    # dangerous builtins
    *[(f"name-{n}", body(f"x = 1\ny = {n}(x)"), "no-forbidden-name", 3)
      for n in ("getattr", "setattr", "delattr", "hasattr", "eval", "exec", "compile", "open",
                "input", "type", "vars", "dir", "globals", "locals", "breakpoint", "help",
                "memoryview", "object", "super", "classmethod", "staticmethod", "property",
                "id", "hash", "format", "exit", "quit")],
    ("getattr-dunder", body("c = getattr(crypten, '__class__')"), "no-forbidden-name", 2),
    ("eval-string", body("eval('1 + 1')"), "no-forbidden-name", 2),
    ("open-passwd", body("f = open('/etc/passwd').read()"), "no-forbidden-name", 2),
    ("builtin-as-value", body("f = [open]"), "no-forbidden-name", 2),
    ("unknown-os", body("os.system('id')"), "unknown-name", 2),
    ("unknown-exception", body("e = Exception('x')"), "unknown-name", 2),
    ("unknown-recursion", body("return run(crypten)"), "unknown-name", 2),
    # formatting
    ("str-format", body("x = 1\ns = '{0.__class__}'.format(x)"), "no-format", 3),
    ("str-format-unbound", body("s = str.format('{0.__class__}', crypten)"), "no-format", 2),
    ("format-map", body("s = '{a.__class__}'.format_map({'a': 1})"), "no-format", 2),
    # f-strings: their expressions are checked like any other
    ("fstring-dunder", body("x = 1\ns = f'{x.__class__}'"), "no-underscore", 3),
    ("fstring-spec-dunder", body("x = 1\ns = f'{x!r:{x.__class__}}'"), "no-underscore", 3),
    ("fstring-in-spec-dunder", body("x = 1\ns = f'{x:{f\"{x.__doc__}\"}}'"),
     "no-underscore", 3),
    ("fstring-format-method", body("x = 1\ns = f\"{'{0.__class__}'.format(x)}\""),
     "no-format", 3),
    ("fstring-format-map", body("s = f\"{'{a.__class__}'.format_map({'a': 1})}\""),
     "no-format", 2),
    ("fstring-format-builtin", body("x = 1\ns = f'{format(x, \"x\")}'"), "no-forbidden-name",
     3),
    ("fstring-getattr", body("s = f'{getattr(crypten, \"load\")}'"), "no-forbidden-name", 2),
    ("fstring-import", body("s = f\"{__import__('os').system('id')}\""), "no-imports", 2),
    ("fstring-builtins", body("s = f'{__builtins__}'"), "no-underscore", 2),
    ("fstring-walrus", body("s = f'{(y := 1)}'"), "syntax-allowlist", 2),
    ("fstring-lambda", body("s = f'{(lambda: 1)()}'"), "syntax-allowlist", 2),
    ("fstring-starred", body("xs = [1]\ns = f'{[*xs]}'"), "syntax-allowlist", 3),
    ("fstring-frame", body("s = f'{[g.gi_frame for g in [1]]}'"), "no-forbidden-attribute", 2),
    ("fstring-torch-os", body("s = f'{torch.os}'"), "no-forbidden-attribute", 2),
    ("fstring-unknown-name", body("s = f'{os}'"), "unknown-name", 2),
    ("fstring-reveal-by-reference", body("x = crypten.cryptensor(torch.zeros(1))\n"
                                         "s = f'{x.get_plain_text}'"), "reveal-form", 3),
    ("fstring-load-by-reference", body("s = f'{crypten.load}'"), "load-form", 2),
    ("fstring-multiline", body('x = 1\ns = f"""a\n{x +\n x.__class__}"""'), "no-underscore",
     5),
    # the job's __import__ (for torch's C++ side) under every spelling
    ("import-attribute", body("m = torch.__import__('os')"), "no-imports", 2),
    ("import-keyword", body("d = dict(__import__=1)"), "no-imports", 2),
    ("import-assign", body("__import__ = print"), "no-imports", 2),
    ("import-builtins-subscript", body("f = __builtins__['__import__']"), "no-underscore", 2),
    ("import-in-comprehension", body("ms = [__import__(n) for n in ['os']]"), "no-imports", 2),
    # syntax outside the allowlist
    ("lambda", body("f = lambda: 1"), "syntax-allowlist", 2),
    ("nested-def", body("x = 1\ndef helper():\n    pass"), "syntax-allowlist", 3),
    ("class-inside", body("class A:\n    pass"), "syntax-allowlist", 2),
    ("class-top-level", BENIGN + "class A:\n    pass\n", "syntax-allowlist", 10),
    ("async-def", "async def run(crypten):\n    pass\n", "syntax-allowlist", 1),
    ("global", body("global x\nx = 1"), "syntax-allowlist", 2),
    ("nonlocal", body("x = 1\nnonlocal x"), "syntax-allowlist", 3),
    ("try-except", body("try:\n    x = 1\nexcept Exception:\n    pass"), "syntax-allowlist", 2),
    ("try-finally", body("try:\n    x = 1\nfinally:\n    pass"), "syntax-allowlist", 2),
    ("raise", body("raise ValueError('x')"), "syntax-allowlist", 2),
    ("assert", body("assert False, 'leak'"), "syntax-allowlist", 2),
    ("with", body("with crypten.no_grad():\n    pass"), "syntax-allowlist", 2),
    ("yield", body("x = 1\nyield x"), "syntax-allowlist", 3),
    ("yield-from", body("yield from [1]"), "syntax-allowlist", 2),
    ("walrus", body("if (n := 3) > 1:\n    pass"), "syntax-allowlist", 2),
    ("del", body("x = 1\ndel x"), "syntax-allowlist", 3),
    ("starred-call", body("xs = [1]\nprint(*xs)"), "syntax-allowlist", 3),
    ("starred-assign", body("a, *b = [1, 2]"), "syntax-allowlist", 2),
    ("starred-list", body("xs = [1]\nys = [*xs]"), "syntax-allowlist", 3),
    ("double-star-call", body("d = {}\nprint(**d)"), "syntax-allowlist", 3),
    ("double-star-dict", body("d = {}\ne = {**d}"), "syntax-allowlist", 3),
    ("match", body("match 1:\n    case int(real=r):\n        pass"), "syntax-allowlist", 2),
    ("async-comprehension", body("xs = [x async for x in y]"), "syntax-allowlist", 2),
    # the function's shape
    ("decorator", "@print\ndef run(crypten):\n    pass\n", "no-decorators", 1),
    ("decorator-call", "@crypten.load('x')\ndef run(crypten):\n    pass\n", "no-decorators",
     1),
    ("defaults", "def run(crypten, x=open('/etc/passwd')):\n    pass\n", "no-defaults", 1),
    ("kwonly-default", "def run(crypten, *, x=1):\n    pass\n", "no-defaults", 1),
    ("param-annotation", "def run(crypten: int):\n    pass\n", "no-annotations", 1),
    ("return-annotation", "def run(crypten) -> print('x'):\n    pass\n", "no-annotations", 1),
    ("variable-annotation", body("x: int = 1"), "no-annotations", 2),
    ("no-params", "def run():\n    pass\n", "params", 1),
    ("wrong-param", "def run(data):\n    pass\n", "params", 1),
    ("swapped-params", "def run(torch, crypten):\n    pass\n", "params", 1),
    ("extra-param", "def run(crypten, torch, x):\n    pass\n", "params", 1),
    ("varargs", "def run(crypten, *args):\n    pass\n", "params", 1),
    ("kwargs", "def run(crypten, **kwargs):\n    pass\n", "params", 1),
    ("posonly", "def run(crypten, /):\n    pass\n", "params", 1),
    ("two-functions", BENIGN + "def other(crypten):\n    pass\n", "one-function", 10),
    ("helper-before-entry", "def helper():\n    pass\n" + BENIGN, "one-function", 1),
    ("module-statement", "x = 1\n" + BENIGN, "one-function", 1),
    ("module-docstring", '"""Doc."""\n' + BENIGN, "one-function", 1),
    ("entry-mismatch", BENIGN.replace("def run", "def train"), "entry-name", 1),
    # names that must mean what they say
    ("rebind-range", body("range = list\nfor i in range(3):\n    pass"), "no-rebind", 2),
    ("rebind-crypten", body("crypten = 1"), "no-rebind", 2),
    ("rebind-torch-loop", body("for torch in [1]:\n    pass"), "no-rebind", 2),
    ("rebind-in-comprehension", body("xs = [1 for print in [1]]"), "no-rebind", 2),
    ("rebind-forbidden", body("open = 1"), "no-rebind", 2),
    # attributes
    ("torch-os", body("torch.os.system('id')"), "no-forbidden-attribute", 2),
    ("torch-sys", body("m = torch.sys.modules"), "no-forbidden-attribute", 2),
    ("torch-builtins", body("e = torch.builtins"), "no-forbidden-attribute", 2),
    ("torch-importlib", body("m = torch.importlib.import_module('os')"),
     "no-forbidden-attribute", 2),
    ("multiprocessing-alias", body("p = torch.cuda.tunable.mp.Process"),
     "no-forbidden-attribute", 2),
    ("generator-frame", body("g = (g.gi_frame.f_back for _ in [1])\nx = next(g)"),
     "no-forbidden-attribute", 2),
    ("frame-globals", body("x = 1\ny = x.f_globals"), "no-forbidden-attribute", 3),
    ("code-object", body("x = 1\ny = x.co_consts"), "no-forbidden-attribute", 3),
    ("traceback", body("x = 1\ny = x.tb_frame"), "no-forbidden-attribute", 3),
    ("mro", body("c = torch.Tensor.mro()"), "no-forbidden-attribute", 2),
    ("attrgetter", body("x = 1\nf = x.attrgetter"), "no-forbidden-attribute", 3),
    ("getattr-attribute", body("x = 1\nf = x.getattr"), "no-forbidden-attribute", 3),
    ("type-by-string", body("x = torch.zeros(1).type('os.system')"), "no-forbidden-attribute",
     2),
    ("torch-load", body("x = torch.load('/etc/passwd')"), "no-forbidden-attribute", 2),
    ("torch-save", body("torch.save(1, '/tmp/x')"), "no-forbidden-attribute", 2),
    ("from-file", body("x = torch.from_file('/etc/passwd', size=10)"),
     "no-forbidden-attribute", 2),
    ("tofile", body("torch.zeros(1).numpy().tofile('/tmp/x')"), "no-forbidden-attribute", 2),
    ("ndarray-ctypes", body("p = torch.zeros(1).numpy().ctypes"), "no-forbidden-attribute",
     2),
    ("hub", body("m = torch.hub.load('evil/repo', 'model')"), "no-forbidden-attribute", 2),
    ("utils", body("u = torch.utils.cpp_extension"), "no-forbidden-attribute", 2),
    ("jit", body("j = torch.jit"), "no-forbidden-attribute", 2),
    ("ops", body("o = torch.ops.load_library('/tmp/x.so')"), "no-forbidden-attribute", 2),
    ("overrides", body("f = torch.overrides.get_ignored_functions()"),
     "no-forbidden-attribute", 2),
    ("numpy-alias", body("x = 1\nn = x.np"), "no-forbidden-attribute", 3),
    ("share", body("x = crypten.cryptensor(torch.zeros(1))\ns = x.share"),
     "no-forbidden-attribute", 3),
    ("data-is-a-share", body("x = crypten.load('secret', 0)\ns = x.data"),
     "no-forbidden-attribute", 3),
    ("comm", body("c = crypten.comm"), "no-forbidden-attribute", 2),
    ("crypten-init", body("crypten.init()"), "no-forbidden-attribute", 2),
    ("load-not-on-crypten", body("c = crypten\nx = c.load('bc-data', 1)"),
     "no-forbidden-attribute", 3),
    ("attribute-store", body("torch.zeros = print"), "no-attribute-store", 2),
    ("attribute-augassign", body("x = crypten.cryptensor(torch.zeros(1))\nx.data += 1"),
     "no-attribute-store", 3),
    ("attribute-for-target", body("x = 1\nfor x.y in [1]:\n    pass"), "no-attribute-store",
     3),
    # reveals and loads the reviewer must see
    ("reveal-alias", body("x = crypten.cryptensor(torch.zeros(1))\ny = x.reveal()"),
     "reveal-form", 3),
    ("decrypt", body("m = crypten.load_model('m')\nm.decrypt()"), "reveal-form", 3),
    ("reveal-by-reference", body("x = crypten.cryptensor(torch.zeros(1))\n"
                                 "f = x.get_plain_text\ny = f(dst=0)"), "reveal-form", 3),
    ("reveal-through-map", body("xs = [crypten.cryptensor(torch.zeros(1))]\n"
                                "ys = list(map(xs[0].get_plain_text, [0]))"), "reveal-form", 3),
    ("load-by-reference", body("f = crypten.load\nx = f('bc-data', 1)"), "load-form", 2),
    # limits
    ("too-many-lines", body("x = 1\n" * 2001), "too-large", 2001),
    # 18 bytes of def line, then 104 bytes a line: line 963 crosses 100,000
    ("too-many-bytes", body(("x = 1  # " + "y" * 90 + "\n") * 1500), "too-large", 963),
    ("blocks-too-deep", body("".join("    " * i + "if True:\n" for i in range(11))
                             + "    " * 11 + "pass"), "too-deep", 12),
    ("expression-too-deep", body("x = " + " + ".join(["1"] * 150)), "too-deep", 2),
    ("parser-recursion", body("x = " + "+".join(["1"] * 45_000)), "too-deep", 1),
]


@pytest.mark.parametrize(("source", "rule", "line"), [a[1:] for a in ATTACKS],
                         ids=[a[0] for a in ATTACKS])
def test_attacks_are_rejected_with_rule_and_line(source: str, rule: str, line: int) -> None:
    err = rejected(source)
    assert (err.rule, err.line) == (rule, line), str(err)
    assert str(err).startswith(f"line {line}: rule '{rule}': ")


def test_messages_quote_the_offending_code() -> None:
    assert "`torch.os` — " in str(rejected(body("torch.os.system('id')")))
    assert "`getattr` — " in str(rejected(body("c = getattr(crypten, 'x')")))
    assert "`x.reveal` — " in str(rejected(body("x = 1\ny = x.reveal()")))


# -- hidden unicode --------------------------------------------------------------------------
UNICODE_ATTACKS: list[tuple[str, str, int, str]] = [
    # id, source, line, code point named in the message
    ("cyrillic-a-homoglyph", body("d\u0430ta = 1\nreturn data"), 2,
     "U+0430 CYRILLIC SMALL LETTER A"),
    ("bidi-override-in-string", body("access = 'user\u202e \u2066// admin\u2069\u2066'"), 2,
     "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("bidi-isolate-in-comment", body("x = 1\nok = True  # \u2067 hidden \u2069 text"), 3,
     "U+2067 RIGHT-TO-LEFT ISOLATE"),
    ("zero-width-space-in-identifier", body("da\u200bta = 1"), 2, "U+200B ZERO WIDTH SPACE"),
    ("zero-width-joiner-in-string", body("s = 'a\u200db'"), 2, "U+200D ZERO WIDTH JOINER"),
    ("bom", "\ufeff" + BENIGN, 1, "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("bom-mid-file", body("x = 1\ny = '\ufeff'"), 3, "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("non-ascii-identifier", body("r\u00e9sultat = 1"), 2, "U+00E9 LATIN SMALL LETTER E WITH"),
    ("fullwidth-eval", body("x = \uff45\uff56\uff41\uff4c('1')"), 2,
     "U+FF45 FULLWIDTH LATIN SMALL LETTER E"),
    ("no-break-space-in-code", body("x\u00a0= 1"), 2, "U+00A0 NO-BREAK SPACE"),
    ("arabic-letter-mark", body("s = 'a\u061cb'"), 2, "U+061C ARABIC LETTER MARK"),
    ("left-to-right-mark", body("# note \u200e"), 2, "U+200E LEFT-TO-RIGHT MARK"),
    ("escape-control-in-string", body("s = 'a\x1b[2Jb'"), 2, "U+001B ESCAPE"),
    ("null-byte", body("s = 'a\x00b'"), 2, "U+0000"),
    ("tag-characters", body("s = 'a\U000e0041\U000e0042'"), 2, "U+E0041 TAG LATIN CAPITAL"),
    ("variation-selector", body("s = 'a\ufe0fb'"), 2, "U+FE0F VARIATION SELECTOR-16"),
    ("hangul-filler", body("s = '\u3164'"), 2, "U+3164 HANGUL FILLER"),
    ("line-separator", body("# one\u2028x = 1"), 2, "U+2028 LINE SEPARATOR"),
    ("private-use", body("s = '\ue000'"), 2, "U+E000"),
    ("lone-surrogate", body("s = '\ud800'"), 2, "U+D800"),
    ("soft-hyphen", body("s = 'pass\u00adword'"), 2, "U+00AD SOFT HYPHEN"),
    # an f-string is one token, but the expressions in its braces are code
    ("cyrillic-in-fstring", body("data = 1\ns = f'{d\u0430ta}'"), 3,
     "U+0430 CYRILLIC SMALL LETTER A"),
    ("fullwidth-eval-in-fstring", body("s = f'{\uff45\uff56\uff41\uff4c(\"1\")}'"), 2,
     "U+FF45 FULLWIDTH LATIN SMALL LETTER E"),
    ("homoglyph-in-fstring-spec", body("x = 1\nw = 3\ns = f'{x:{\u0461}}'"), 4,
     "U+0461 CYRILLIC SMALL LETTER OMEGA"),
    ("homoglyph-in-fstring-comprehension", body("xs = [1]\ns = f'{[\u0445 for \u0445 in xs]}'"),
     3, "U+0445 CYRILLIC SMALL LETTER HA"),
    ("homoglyph-multiline-fstring", body('x = 1\ns = f"""\n{x +\n  \u0445}"""'), 5,
     "U+0445 CYRILLIC SMALL LETTER HA"),
]


@pytest.mark.parametrize(("source", "line", "named"), [a[1:] for a in UNICODE_ATTACKS],
                         ids=[a[0] for a in UNICODE_ATTACKS])
def test_hidden_unicode_is_rejected(source: str, line: int, named: str) -> None:
    err = rejected(source)
    assert (err.rule, err.line) == ("no-hidden-unicode", line), str(err)
    assert named in str(err)


def test_hidden_unicode_reports_the_column() -> None:
    err = rejected(body("s = 'ab\u202ecd'"))
    assert str(err).startswith("line 2: rule 'no-hidden-unicode': U+202E RIGHT-TO-LEFT "
                               "OVERRIDE at column 12 — ")
    err = rejected(body("data = 1\ns = f'\u00e9 {d\u0430ta}'"))
    assert str(err).startswith("line 3: rule 'no-hidden-unicode': U+0430 CYRILLIC SMALL LETTER "
                               "A at column 15 — inside an f-string's braces is code")


def test_non_ascii_text_in_fstrings_is_a_literal() -> None:
    """Only the braces hold code: text, string literals inside the braces and format specs'
    literal text may be any (visible) character, as in any other string."""
    check(body("x = 1.5\ns = f'température {x:.1f}°C, {\"é\" + str(x)} {x:{\"→\"}>5}'"), "run")


def test_fstring_format_specs_reach_no_attribute() -> None:
    """What the static rules let through in a format spec is text for the value's own
    ``__format__``: field lookups such as ``{0.__class__}`` mean nothing there."""
    import torch

    check(body("x = 1\ns = f\"{x:{'{0.__class__}'}}\""), "run")  # a literal spec: only text
    for value in (1, 2.5, "text", [1], torch.zeros(()), torch.zeros(2)):
        with pytest.raises((ValueError, TypeError)):
            format(value, "{0.__class__}")


def test_non_ascii_source_that_does_not_parse_reports_syntax() -> None:
    err = rejected("def run(crypten)\n    s = 'café'\n")
    assert err.rule == "syntax"


def test_huge_source_is_rejected_before_anything_else() -> None:
    source = "\u202e" + "x" * (MAX_BYTES + 1)
    err = rejected(source)
    assert err.rule == "too-large"
    assert "the limit is 100,000" in str(err)


# -- defence in depth: what the allowed attribute chains can reach -----------------------------
def test_no_allowed_attribute_chain_reaches_a_door_out() -> None:
    """Walk every attribute chain the static rules let through, from the objects a job starts
    with (``torch``, ``crypten`` (the real module: a superset of the job's facade), the safe
    builtins, and values a job can make), and fail on anything that opens a way out."""
    import builtins
    import collections
    import importlib
    import inspect
    import os
    import time
    import types
    import warnings

    import numpy
    import torch

    from node.compat import crypten
    from node.jail import static

    def allowed(name: str) -> bool:
        return not (name.startswith("_") or name in static.FORBIDDEN_ATTRIBUTES
                    or name in static.FORMAT_ATTRIBUTES or name in static.REVEAL_ALIASES
                    or name in static.LOAD_METHODS or name.startswith(static._FRAME_PREFIXES))

    doors = {id(getattr(builtins, n)): f"builtins.{n}" for n in (
        "eval", "exec", "compile", "open", "getattr", "setattr", "__import__", "input",
        "breakpoint", "vars", "globals", "locals", "help")}
    doors.update({id(f): name for f, name in (
        (torch.load, "torch.load"), (torch.save, "torch.save"), (torch.from_file, "from_file"),
        (importlib.import_module, "import_module"), (os.system, "os.system"),
        (pickle.loads, "pickle.loads"), (numpy.load, "numpy.load"),
        (numpy.fromfile, "numpy.fromfile"), (crypten.load_from_party, "load_from_party"),
        (crypten.save, "crypten.save"), (types.FunctionType, "FunctionType"),
        (torch.set_default_tensor_type, "set_default_tensor_type"))})

    starts: list[tuple[object, str]] = [(torch, "torch"), (crypten, "crypten")]
    starts += [(getattr(builtins, n), n) for n in static.SAFE_GLOBALS if hasattr(builtins, n)]
    starts += [(torch.zeros(2), "tensor"), (torch.zeros(1).numpy(), "ndarray"),
               (torch.zeros(2).untyped_storage(), "storage"),
               (torch.zeros(2, requires_grad=True).sum(), "grad_tensor"),
               (torch.nn.Linear(2, 2), "torch_module"), ((x for x in []), "generator")]
    queue = collections.deque((obj, path, 0) for obj, path in starts)
    seen: set[int] = set()
    found: dict[str, str] = {}
    foreign: dict[str, str] = {}
    scalars = (int, float, str, bytes, bool, type(None), complex)
    deadline = time.monotonic() + 120
    while queue and time.monotonic() < deadline:
        obj, path, depth = queue.popleft()
        if id(obj) in seen or isinstance(obj, scalars):
            continue
        seen.add(id(obj))
        if id(obj) in doors:
            found.setdefault(doors[id(obj)], path)
        if isinstance(obj, types.ModuleType) and \
                obj.__name__.split(".")[0] not in ("torch", "crypten", "copy"):
            foreign.setdefault(obj.__name__, path)
        if depth >= 12 or (depth > 1 and isinstance(obj, (torch.Tensor, numpy.ndarray,
                                                          numpy.generic))):
            continue
        try:
            names = dir(obj)
        except Exception:  # noqa: BLE001 - some objects refuse dir()
            continue
        for name in names:
            if not allowed(name):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if not isinstance(obj, types.ModuleType):
                        inspect.getattr_static(obj, name)
                    value = getattr(obj, name)
            except Exception:  # noqa: BLE001 - properties that raise
                continue
            if isinstance(value, (list, tuple, set, frozenset)) and len(value) < 200:
                queue.extend((v, f"{path}.{name}[{i}]", depth + 1) for i, v in enumerate(value))
            elif isinstance(value, dict) and len(value) < 500:
                queue.extend((v, f"{path}.{name}[{k!r}]", depth + 1)
                             for k, v in list(value.items()))
            queue.append((value, f"{path}.{name}", depth + 1))
    assert not queue, "the walk did not finish in time"
    assert found == {}, f"dangerous objects reachable: {found}"
    assert foreign == {}, f"modules outside torch/crypten reachable: {foreign}"
