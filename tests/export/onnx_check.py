"""onnx_check.py - runs onnx.checker.check_model (full check, with shape inference) on an
exported model and prints what the tests assert on: IR version, opsets, graph inputs and
outputs with their shapes, operator types, initializer types and metadata_props.
Run with /usr/bin/python3 (Debian's python3-onnx); exits non-zero when the checker refuses."""
import sys

import onnx


def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def main(path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    print("ir", model.ir_version)
    print("opset", ",".join("%s:%d" % (o.domain or "ai.onnx", o.version) for o in model.opset_import))
    for v in model.graph.input:
        print("input", v.name, dims(v))
    for v in model.graph.output:
        print("output", v.name, dims(v))
    print("ops", " ".join(sorted({n.op_type for n in model.graph.node})))
    print("initializers", " ".join(sorted({onnx.TensorProto.DataType.Name(t.data_type)
                                           for t in model.graph.initializer})))
    for p in model.metadata_props:
        print("meta", p.key, p.value)


if __name__ == "__main__":
    main(sys.argv[1])
