"""Models made by the real libraries, as people outside estella make them; run as a script in a subprocess
(tf-keras needs TF_USE_LEGACY_KERAS=1 before TensorFlow starts, so it cannot share the test process).

    python sources.py MODE OUT_DIR TEXT_FILE

Each mode trains a tiny model briefly on TEXT_FILE with the library's own fit, saves it the way
its users do, and writes OUT_DIR/greedy.json: {"prime", "text"}, the text the model writes greedily
from the prime in its own library (the chapter's generate_text with argmax for the tf-keras ones).

  chapter-checkpoint  tf-keras: the chapter's Sequential (Embedding -> GRU(stateful, batch_input_shape)
                      -> Dense), fit one short epoch with ModelCheckpoint(save_weights_only=True)
                      into OUT_DIR/checkpoints/ckpt_{epoch}
  chapter-lstm-checkpoint  the same with two stateful LSTM layers, LSTM_EPOCHS epochs (ckpt_1 .. ckpt_3)
  keras2-h5           tf-keras: Embedding -> GRU(stateful) -> Dropout -> Dense, model.save("model.h5")
  keras3-lstm         Keras 3: a functional Embedding -> LSTM -> Dropout -> LSTM -> Dense, model.keras
  keras3-gru          Keras 3: a Sequential Embedding -> GRU -> Dense, model.keras
  refused-checkpoints tf-keras, not trained: save_weights checkpoints of a GRU(reset_after=False) and of
                      Embedding -> Conv1D -> Dense, in OUT_DIR/reset_before/ and OUT_DIR/conv/
"""

import json
import os
import sys

import numpy as np

PRIME = "Pip"
CHARS = 60
SEQ, BATCH, E, U = 24, 8, 8, 16
LEARNING_RATE = 0.02  # high, so that one short epoch already writes words, not one repeated character
LSTM_EPOCHS = 3  # an LSTM stack learns slower: after one epoch it writes only spaces


def data(text, chars):
    ids = np.array([chars.index(c) for c in text], np.int32)
    n = (len(ids) - 1) // SEQ
    x, y = ids[:n * SEQ].reshape(n, SEQ), ids[1:n * SEQ + 1].reshape(n, SEQ)
    n = n - n % BATCH
    return x[:n], y[:n]


def chapter_model(tf, vocab_size, batch_size, cell="GRU", layers=1, **settings):
    rnn = getattr(tf.keras.layers, cell)
    return tf.keras.Sequential([
        tf.keras.layers.Embedding(vocab_size, E, batch_input_shape=[batch_size, None]),
        *[rnn(U, return_sequences=True, stateful=True, recurrent_initializer="glorot_uniform", **settings)
          for _ in range(layers)],
        tf.keras.layers.Dense(vocab_size)])


def chapter_greedy(tf, model, chars):
    """The chapter's generate_text, argmax instead of a draw: the prime at once, then one id at a time."""
    ids = tf.expand_dims([chars.index(c) for c in PRIME], 0)
    model.reset_states()
    out = []
    for _ in range(CHARS):
        predictions = tf.squeeze(model(ids), 0)
        next_id = int(tf.argmax(predictions[-1]))
        out.append(chars[next_id])
        ids = tf.expand_dims([next_id], 0)
    return PRIME + "".join(out)


def chapter_checkpoint(out, text, chars, cell="GRU", layers=1, epochs=1):
    import tensorflow as tf

    x, y = data(text, chars)
    model = chapter_model(tf, len(chars), BATCH, cell, layers)
    model.compile(optimizer=tf.keras.optimizers.Adam(LEARNING_RATE),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    checkpoint_dir = os.path.join(out, "checkpoints")
    callback = tf.keras.callbacks.ModelCheckpoint(filepath=os.path.join(checkpoint_dir, "ckpt_{epoch}"),
                                                  save_weights_only=True)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, callbacks=[callback], verbose=0, shuffle=False)
    # The chapter rebuilds the model for batch 1 and loads the latest checkpoint to generate.
    model = chapter_model(tf, len(chars), 1, cell, layers)
    model.load_weights(tf.train.latest_checkpoint(checkpoint_dir))  # the last epoch's
    model.build(tf.TensorShape([1, None]))
    return chapter_greedy(tf, model, chars)


def keras2_h5(out, text, chars):
    import tensorflow as tf

    x, y = data(text, chars)
    model = tf.keras.Sequential([
        tf.keras.layers.Embedding(len(chars), E, batch_input_shape=[BATCH, None]),
        tf.keras.layers.GRU(U, return_sequences=True, stateful=True),
        tf.keras.layers.Dropout(0.1),
        tf.keras.layers.Dense(len(chars))])
    model.compile(optimizer=tf.keras.optimizers.Adam(LEARNING_RATE),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    path = os.path.join(out, "model.h5")
    model.save(path)
    import tf_keras

    loaded = tf_keras.models.load_model(path, compile=False)  # batch 8, stateful: run the prime as row 0
    ids = np.zeros((BATCH, len(PRIME)), np.int32)
    ids[0] = [chars.index(c) for c in PRIME]
    loaded.reset_states()
    result = PRIME
    for _ in range(CHARS):
        next_id = int(np.argmax(loaded(ids).numpy()[0, -1]))
        result += chars[next_id]
        ids = np.zeros((BATCH, 1), np.int32)
        ids[0, 0] = next_id
    return result


def keras3(out, text, chars, lstm):
    import keras

    x, y = data(text, chars)
    if lstm:
        ids = keras.Input(shape=(None,), dtype="int32")
        h = keras.layers.Embedding(len(chars), E)(ids)
        h = keras.layers.LSTM(U, return_sequences=True)(h)
        h = keras.layers.Dropout(0.1)(h)
        h = keras.layers.LSTM(12, return_sequences=True)(h)
        model = keras.Model(ids, keras.layers.Dense(len(chars))(h))
    else:
        model = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(len(chars), E),
                                  keras.layers.GRU(U, return_sequences=True), keras.layers.Dense(len(chars))])
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=LSTM_EPOCHS if lstm else 1, verbose=0, shuffle=False)
    path = os.path.join(out, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    result = PRIME
    for _ in range(CHARS):  # not stateful: the whole text so far, each time
        logits = keras.ops.convert_to_numpy(loaded(np.array([[chars.index(c) for c in result]], np.int32)))
        result += chars[int(np.argmax(logits[0, -1]))]
    return result


def refused_checkpoints(out, text, chars):
    import tensorflow as tf

    model = chapter_model(tf, len(chars), 1, reset_after=False)
    model.build(tf.TensorShape([1, None]))
    model.save_weights(os.path.join(out, "reset_before", "ckpt_1"))
    conv = tf.keras.Sequential([tf.keras.layers.Embedding(len(chars), E), tf.keras.layers.Conv1D(U, 3),
                                tf.keras.layers.Dense(len(chars))])
    conv.build(tf.TensorShape([1, None]))
    conv.save_weights(os.path.join(out, "conv", "ckpt_1"))
    return None


def main(mode, out, text_file):
    with open(text_file, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    os.makedirs(out, exist_ok=True)
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    make = {"chapter-checkpoint": chapter_checkpoint,
            "chapter-lstm-checkpoint": lambda o, t, c: chapter_checkpoint(o, t, c, "LSTM", 2, LSTM_EPOCHS),
            "keras2-h5": keras2_h5, "refused-checkpoints": refused_checkpoints,
            "keras3-lstm": lambda o, t, c: keras3(o, t, c, lstm=True),
            "keras3-gru": lambda o, t, c: keras3(o, t, c, lstm=False)}[mode]
    greedy = make(out, text, chars)
    with open(os.path.join(out, "greedy.json"), "w", encoding="utf-8") as f:
        json.dump({"prime": PRIME, "text": greedy, "library": tf.keras.__name__}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
