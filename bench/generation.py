"""Generation speed of one export, in one process: the TensorFlow baselines, every runtime backend,
the bare interpreters, and the hardware limit, measured in interleaved rounds.

Run as a child of the suite (`python -m estella.bench.generation RUN EXPORT OUT.json`) so that the
thread settings take effect before numpy and TensorFlow start their thread pools.
"""

import argparse
import json
import os
import time

import numpy as np

from .stats import interleaved, inverted, scaled

PRIME = "T"
TEMPERATURE = 1.0
RUNTIME_CASES = (("tflite", "float32"), ("tflite", "int8"), ("onnx", "float32"), ("onnx", "int8"),
                 ("numpy", "float32"), ("savedmodel", "float32"))
BATCHES = (1, 8, 32)


def load_weights(export_dir):
    """weights.npz under schema 2's names (a schema-1 file's one GRU as layer 0)."""
    from estella.runtime.weights_format import from_schema1

    with np.load(os.path.join(export_dir, "weights.npz"), allow_pickle=False) as w:
        return from_schema1({k: w[k] for k in w.files})


# --- the hardware limit: the weight bytes one character must read, and nothing else --------------

def step_kernels(weights):
    """The names of the matrices one character must read: every layer's recurrent kernel, the input
    kernels of layers >= 1, and the dense layer (layer 0's input projection is a table lookup)."""
    from estella.runtime.weights_format import architecture, layer_keys

    layers = len(architecture(weights)["units"])
    names = []
    for k in range(layers):
        kernel, recurrent, _ = layer_keys(k)
        names += [kernel, recurrent] if k > 0 else [recurrent]
    return [*names, "dense_kernel"]


def limit_bytes(weights):
    """{precision: bytes read per character}: the step kernels at 4 bytes a weight, and at 1."""
    n = sum(weights[k].size for k in step_kernels(weights))
    return {"float32": 4 * n, "int8": n}


def products_inputs(weights, batch, dtype=np.float32):
    """{rows: [batch, rows] input}: one vector per distinct kernel height (a stack of equal layers has one)."""
    rng = np.random.default_rng(0)
    rows = sorted({weights[k].shape[0] for k in step_kernels(weights)})
    if dtype == np.uint8:
        return {r: rng.integers(0, 256, (batch, r), dtype=np.uint8) for r in rows}
    return {r: rng.standard_normal((batch, r)).astype(dtype) for r in rows}


def limit_float32(weights, batch=1, transposed=False):
    """h @ W for every step kernel per character (step_kernels: the input projection is a table lookup).

    transposed: the same products as W^T h with W^T stored row-major, the other BLAS gemv layout.
    """
    kernels = [weights[k] for k in step_kernels(weights)]
    inputs = products_inputs(weights, batch)
    if transposed:
        inputs = {r: np.ascontiguousarray(h.T) for r, h in inputs.items()}
        products = [(np.ascontiguousarray(k.T), inputs[k.shape[0]], np.empty((k.shape[1], batch), np.float32))
                    for k in kernels]
    else:
        products = [(inputs[k.shape[0]], k, np.empty((batch, k.shape[1]), np.float32)) for k in kernels]

    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            for a, b, out in products:
                np.matmul(a, b, out=out)
        return time.perf_counter() - t0, n * batch
    return run


def limit_int8(weights, batch=1, threads=1):
    """The same products on int8 weights, as ONNX Runtime's MatMulInteger (MLAS int8 kernels).

    numpy has no fast int8 matrix product (integer matmul is a plain loop, not BLAS), so the int8
    floor is this or the LiteRT graph, whichever is faster; one call of a MatMulInteger node per step
    kernel per character, its per-call cost included, which every ONNX int8 step pays as well.
    """
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(-127, 128, weights[k].shape, dtype=np.int8), k)
             for k in step_kernels(weights)]
    nodes = [helper.make_node("MatMulInteger", [f"h{k.dims[0]}", k.name], [f"y{i}"]) for i, k in enumerate(inits)]
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.INT32, None) for i in range(len(nodes))]
    feed = {f"h{rows}": h for rows, h in products_inputs(weights, batch, np.uint8).items()}
    inputs = [helper.make_tensor_value_info(name, TensorProto.UINT8, [None, h.shape[1]]) for name, h in feed.items()]
    graph = helper.make_graph(nodes, "int8_limit", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            session.run(None, feed)
        return time.perf_counter() - t0, n * batch
    return run


def litert_products(weights, precision):
    """A LiteRT graph of the same products: one FULLY_CONNECTED op (XNNPACK kernels) per step kernel on
    constant weights, one input per kernel height; int8 is the converter's dynamic-range
    quantization, as the int8 export's."""
    import tensorflow as tf

    kernels = [tf.constant(weights[k]) for k in step_kernels(weights)]
    rows = list(products_inputs(weights, 1))

    @tf.function(input_signature=[tf.TensorSpec([1, r], tf.float32) for r in rows])
    def products(*h):
        by_rows = dict(zip(rows, h))
        return [tf.matmul(by_rows[k.shape[0]], k) for k in kernels]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([products.get_concrete_function()])
    if precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def limit_litert(weights, graph, batch=1, threads=1):
    """The LiteRT graph of litert_products, invoked with B rows."""
    from ai_edge_litert.interpreter import Interpreter

    kernels = [weights[k] for k in step_kernels(weights)]
    inputs = products_inputs(weights, batch)
    interpreter = Interpreter(model_content=graph, num_threads=threads)
    feeds = [(d["index"], inputs[d["shape"][1]]) for d in interpreter.get_input_details()]  # heights differ
    outputs = interpreter.get_output_details()
    for index, h in feeds:
        interpreter.resize_tensor_input(index, h.shape)
    interpreter.allocate_tensors()
    for index, h in feeds:
        interpreter.set_tensor(index, h)
    interpreter.invoke()
    # A graph that lost its weights still runs; make sure this one computes every product.
    wants = [inputs[k.shape[0]] @ k for k in kernels]
    assert len(outputs) == len(wants), "the LiteRT limit graph lost a product"
    for o in outputs:
        out = interpreter.get_tensor(o["index"])
        assert any(out.shape == w.shape and np.allclose(out, w, atol=0.1 * np.abs(w).max()) for w in wants), \
            "the LiteRT limit graph is wrong"

    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            for index, h in feeds:
                interpreter.set_tensor(index, h)
            interpreter.invoke()
            for o in outputs:
                interpreter.get_tensor(o["index"])
        return time.perf_counter() - t0, n * batch
    return run


def limits(weights, batch, threads, litert_graphs):
    """Every bare product we have over the step's weight bytes; the report takes the fastest per precision.
    litert_graphs: {precision: tflite bytes}, empty without TensorFlow to convert them."""
    cases = {"limit float32 (numpy h@W)": limit_float32(weights, batch),
             "limit float32 (numpy W^T h)": limit_float32(weights, batch, transposed=True),
             "limit int8 (ORT MatMulInteger)": limit_int8(weights, batch, threads)}
    for precision, graph in litert_graphs.items():
        cases[f"limit {precision} (LiteRT FC)"] = limit_litert(weights, graph, batch, threads)
    return cases


def numpy_int8(weights):
    """For the record: numpy's own int8 product (einsum with int32 accumulation), which is not BLAS."""
    rng = np.random.default_rng(0)
    kernels = [np.ascontiguousarray(rng.integers(-127, 128, weights[k].shape, dtype=np.int8).T)
               for k in step_kernels(weights)]
    inputs = {k.shape[1]: rng.integers(-127, 128, k.shape[1], dtype=np.int8) for k in kernels}

    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            for k in kernels:
                np.einsum("ij,j->i", k, inputs[k.shape[1]], dtype=np.int32)
        return time.perf_counter() - t0, n
    return run


# --- the TensorFlow baselines ----------------------------------------------------------------------

def original_loop(run_dir):
    """The original chapter's generate_text: a stateful batch-1 Sequential model called eagerly per
    character, then tf.random.categorical on logits / temperature."""
    import keras
    import tensorflow as tf

    from estella.build.model import rnn_layer_names
    from estella.build.sample import load_reference

    step_model, vocab, cfg = load_reference(run_dir, batch_size=1)
    hp = cfg["hparams"]
    cell = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[hp.cell]
    recurrent = [cell(units, return_sequences=True, stateful=True, recurrent_initializer="glorot_uniform")
                 for units in hp.units]
    model = keras.Sequential([
        keras.Input(batch_shape=(1, None), dtype="int32"),
        keras.layers.Embedding(len(vocab), hp.embedding_dim),
        *recurrent,
        keras.layers.Dense(len(vocab)),
    ])  # the chapter's model (one GRU layer), with the run's cell and layers
    for layer, name in zip(model.layers, ("embedding", *rnn_layer_names(hp.cell, len(hp.units)), "logits")):
        layer.set_weights(step_model.get_layer(name).get_weights())
    start = vocab.char_to_id[PRIME]

    def run(n):
        t0 = time.perf_counter()
        for layer in recurrent:
            layer.reset_state()
        input_eval = tf.expand_dims([start], 0)
        text = []
        for _ in range(n):
            predictions = model(input_eval)
            predictions = tf.squeeze(predictions, 0) / TEMPERATURE
            predicted_id = tf.random.categorical(predictions, num_samples=1)[-1, 0].numpy()
            input_eval = tf.expand_dims([predicted_id], 0)
            text.append(vocab.chars[predicted_id])
        return time.perf_counter() - t0, n
    return run


def tf_function_step(run_dir):
    """The TF text-generation tutorial's OneStep: model call, temperature and categorical sampling in
    one tf.function; the ids stay tensors and are turned into text at the end."""
    import tensorflow as tf

    from estella.build.sample import load_reference

    step_model, vocab, cfg = load_reference(run_dir, batch_size=1)
    chars = tf.constant(vocab.chars)

    @tf.function
    def one_step(ids, state):
        logits, new_state = step_model([ids, state], training=False)
        next_ids = tf.random.categorical(logits[:, -1, :] / TEMPERATURE, num_samples=1, dtype=tf.int32)
        return next_ids, new_state

    def run(n):
        t0 = time.perf_counter()
        ids = tf.constant([[vocab.char_to_id[PRIME]]], tf.int32)
        state = tf.zeros((1, step_model.inputs[1].shape[-1]))
        out = []
        for _ in range(n):
            ids, state = one_step(ids, state)
            out.append(ids)
        tf.strings.reduce_join(tf.gather(chars, tf.concat(out, 0)[:, 0])).numpy()
        return time.perf_counter() - t0, n
    return run


# --- the runtime ----------------------------------------------------------------------------------

def runtime_generate(generator, batch=1):
    """The full runtime: Generator.generate (batch 1) or generate_many (B streams), sampling included."""
    primes = [PRIME] * batch

    def run(n):
        t0 = time.perf_counter()
        if batch == 1:
            generator.generate(PRIME, n, temperature=TEMPERATURE, seed=0, echo=False)
        else:
            generator.generate_many(primes, n, temperature=TEMPERATURE, seed=0, echo=False)
        return time.perf_counter() - t0, n * batch
    return run


def bare_interpreter(backend):
    """The interpreter alone, fed its own state back: no checks, no sampling, no Python around it.

    Each interpreter's cheapest loop, so that the difference to the runtime is the runtime's own
    Python: LiteRT's set_tensor/invoke/get_tensor; ONNX Runtime's run_with_iobinding on buffers bound
    once, the state alternating between two of them (cheaper per step than session.run)."""
    ids = np.array([[1]], np.int32)
    state = backend.initial_state(1)
    if backend.name == "tflite":
        interpreter = backend.interpreter
        backend.step_trusted(ids, state)  # allocated for batch 1

        def step(state):
            interpreter.set_tensor(backend.ids_index, ids)
            interpreter.set_tensor(backend.state_index, state)
            interpreter.invoke()
            interpreter.get_tensor(backend.logits_index)
            return interpreter.get_tensor(backend.new_state_index)
    else:
        session = backend.session
        bound = backend.decoder(1)  # the runtime's bindings (ids, state, logits, new_state), run bare

        def step(reads):
            session.run_with_iobinding(bound.bindings[reads])
            return 1 - reads
        state = 0  # the buffer the first step reads

    def run(n):
        s = state
        t0 = time.perf_counter()
        for _ in range(n):
            s = step(s)
        return time.perf_counter() - t0, n
    return run


def unfolded_backends(weights, vocab, out_dir, threads):
    """The previous step graphs (an embedding gather, then the [E, 3U] input kernel on every
    character; export/stepgraph.py with fold=False), opened through the runtime's own loaders: the
    baseline that the folded graphs are measured against. They live in the bench only."""
    from estella.build.vocab import Vocab
    from estella.export import manifest as manifest_mod
    from estella.export.onnx import write_onnx, write_onnx_int8
    from estella.export.pipeline import ARTIFACTS
    from estella.export.tflite import write_tflite
    from estella.export.stepgraph import state_size
    from estella.export.weights import architecture
    from estella.runtime.backends import open_backend

    arch = architecture(weights)
    os.makedirs(out_dir, exist_ok=True)
    write_tflite(weights, os.path.join(out_dir, "model.tflite"), fold=False)
    write_tflite(weights, os.path.join(out_dir, "model.int8.tflite"), int8=True, fold=False)
    write_onnx(weights, os.path.join(out_dir, "model.onnx"), fold=False)
    write_onnx_int8(os.path.join(out_dir, "model.onnx"), os.path.join(out_dir, "model.int8.onnx"))
    specs = [spec for spec in ARTIFACTS if spec.format in ("tflite", "onnx") and spec.precision in ("float32", "int8")]
    artifacts = [manifest_mod.artifact_entry(out_dir, spec, V=arch["vocab_size"], S=state_size(weights))
                 for spec in specs]
    manifest = manifest_mod.new_manifest(Vocab(vocab), arch, artifacts, {})
    manifest["model"]["input_table"] = {"folded": False}
    return {case_name(spec.format, spec.precision): open_backend(out_dir, spec.format, spec.precision,
                                                                 manifest=manifest, num_threads=threads)
            for spec in specs}


def case_name(backend, precision):
    return f"{backend} {precision}"


def measure(run_dir, export_dir, repeats, threads, block_seconds, batches=BATCHES, with_tf=True, log=print):
    from estella.runtime.generator import Generator

    from estella.runtime.weights_format import architecture

    weights = load_weights(export_dir)
    arch = architecture(weights)
    generators = {case_name(b, p): Generator.load(export_dir, backend=b, precision=p,
                                                  **({"num_threads": threads} if b in ("tflite", "onnx") else {}))
                  for b, p in RUNTIME_CASES}

    litert_graphs = {p: litert_products(weights, p) for p in ("float32", "int8")} if with_tf else {}
    per_char = {**limits(weights, 1, threads, litert_graphs), "numpy int8 einsum (not BLAS)": numpy_int8(weights)}
    if with_tf:
        per_char["TF original loop (eager, stateful)"] = original_loop(run_dir)
        per_char["TF tutorial tf.function step"] = tf_function_step(run_dir)
    for name, generator in generators.items():
        per_char[name] = runtime_generate(generator)
        if generator.backend.name in ("tflite", "onnx"):
            per_char[f"bare {name}"] = bare_interpreter(generator.backend)
    # The graphs before the input projection was folded into the embedding (needs the export stage); the
    # fold concerns layer 0 alone, so one-layer models show it and stacks skip the extra conversions.
    if with_tf and len(arch["units"]) == 1:
        vocab = generators[case_name("numpy", "float32")].vocab
        for name, backend in unfolded_backends(weights, vocab, os.path.join(os.path.dirname(export_dir),
                                                                             "unfolded"), threads).items():
            per_char[f"bare {name} unfolded"] = bare_interpreter(backend)
    log(f"  batch 1: {len(per_char)} cases x {repeats} rounds")
    results = {name: scaled(s, 1e6) for name, s in interleaved(per_char, repeats, block_seconds).items()}

    throughput = {}
    for batch in batches:
        cases = limits(weights, batch, threads, litert_graphs)
        cases.update({name: runtime_generate(g, batch) for name, g in generators.items()})
        log(f"  batch {batch}: {len(cases)} cases x {repeats} rounds")
        throughput[str(batch)] = {name: inverted(s) for name, s in
                                  interleaved(cases, repeats, block_seconds).items()}
    return {
        "shape": {"vocab_size": arch["vocab_size"], "embedding_dim": arch["embedding_dim"], "cell": arch["cell"],
                  "units": arch["units"]},
        "threads": threads,
        "limit_bytes_per_char": {p: int(b) for p, b in limit_bytes(weights).items()},
        "per_char_us": results,
        "throughput_chars_per_s": throughput,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("export_dir")
    parser.add_argument("out")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--block-seconds", type=float, default=0.2)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow baselines")
    args = parser.parse_args(argv)
    if not args.no_tf:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    result = measure(args.run_dir, args.export_dir, args.repeats, args.threads, args.block_seconds,
                     batches=[int(b) for b in args.batches.split(",") if b], with_tf=not args.no_tf)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
