"""The pooled-embedding output that the out-of-distribution score needs: Keras model surgery, before conversion."""

from __future__ import annotations

from allx.errors import ModelError

EMBEDDING_LAYER = "ood_embedding"


def feature_map_of(model):
    """The backbone's feature map: the 4-D input of the nested "head" (the `allx train` layout), else None."""
    try:
        tensor = model.get_layer("head").input
    except (ValueError, AttributeError):  # no layer named head, or one called on several inputs
        return None
    return tensor if len(tuple(tensor.shape)) == 4 else None


def with_embedding(model):
    """The same classifier with a second output, the global-average-pooled feature map; None when the
    model's structure does not allow it (no head on a feature map, several outputs, or an embedding as
    wide as the class output, which the device could not tell apart)."""
    import keras  # heavy (TensorFlow): only when a model is converted

    feature_map = feature_map_of(model)
    if feature_map is None or len(model.outputs) != 1 or feature_map.shape[-1] == model.outputs[0].shape[-1]:
        return None
    pooled = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(feature_map)
    return keras.Model(model.input, [model.outputs[0], pooled], name=model.name)


def plan_model(model, requested: bool | None):
    """(the Keras model to convert, None) with the embedding output, or (model, why not) without it.

    `requested` None means "on when the structure allows it"; True insists (an error when it cannot).
    """
    if requested is False:
        return model, "off (--no-ood)"
    two = with_embedding(model)
    if two is None:
        reason = ("the model has no nested 'head' on a 4-D feature map (the `allx train` layout) to pool an "
                  "embedding from")
        if requested:
            raise ModelError(f"got --ood, but {reason}; expected a model from allx train (or use --no-ood)")
        return model, f"off: {reason}"
    return two, None
