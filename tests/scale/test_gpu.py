"""On a GPU, Keras' GRU must run on the cuDNN kernel: the model's GRU settings are the ones cuDNN takes."""

import pytest

pytestmark = pytest.mark.tensorflow


def _visible_gpus():
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")


@pytest.mark.skipif("not _visible_gpus()", reason="no GPU visible to TensorFlow: the cuDNN path needs one "
                    "(pip install 'estella[gpu]' on a CUDA machine)")
def test_gru_takes_the_cudnn_kernel_on_a_gpu():
    import keras
    import tensorflow as tf

    from estella.build.model import build_model

    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"the cuDNN kernel check reads TensorFlow graphs; backend is {keras.backend.backend()}")
    model = build_model(84, 16, 32)
    step = tf.function(lambda ids: model(ids, training=True))
    graph = step.get_concrete_function(tf.TensorSpec([4, 10], tf.int32)).graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert any(op.startswith("CudnnRNN") for op in ops), sorted(ops)
