#pragma once
// torch.save-compatible archives: the interchange format with the Python stack.
//
// Files written here load in Python with `torch.load(path, weights_only=True)`, and Python files
// saved as plain (possibly nested) dicts load here. Python's OrderedDict (a raw
// `model.state_dict()`) cannot be represented by LibTorch's unpickler; it is detected and reported.
#include <ATen/core/ivalue.h>

#include <string>
#include <utility>
#include <vector>

namespace instinct::io {

/// Ordered name->tensor list (state dicts keep insertion order).
using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

/// Saves a nested object as a torch.save zip archive that Python loads with
/// `torch.load(path, weights_only=True)` (torch 1.13 and 2.x).
/// Supported values: dicts with string keys (c10::Dict / GenericDict; insertion order kept), lists
/// and tuples (typed lists such as c10::List<int64_t> are written as plain Python lists), strings,
/// ints, doubles, bools, None and tensors. Tensors are detached, moved to CPU and made contiguous;
/// each tensor gets its own storage holding only its elements (views are not written with their
/// base, and no two saved tensors share storage). The file is replaced atomically (AtomicFile).
/// Throws instinct::Error naming the file and the offending key path for unsupported values
/// (e.g. a dict with non-string keys, a custom class) or when the file cannot be written.
void save_object(const std::string& path, const c10::IValue& obj);

/// Builds a GenericDict IValue (string keys, insertion order) from a TensorList, e.g. for
/// `{"trunk": tensor_dict(sd), "backbone": "vit_base"}` objects passed to save_object.
c10::IValue tensor_dict(const TensorList& tensors);

/// Loads a torch.save zip archive whose top-level object is a plain dict (possibly nested);
/// tensors are on CPU. The file is not read into memory as a whole: records are read from the zip
/// one at a time. Throws instinct::Error with a one-line message naming the file for:
///  - a missing / unreadable file or a directory;
///  - a file that is not a zip (legacy pre-1.6 torch.save format, a plain pickle, anything else);
///  - a truncated or corrupt archive;
///  - an OrderedDict anywhere in the object (e.g. a raw `model.state_dict()`), telling the user to
///    re-save with `torch.save(dict(sd), path)`;
///  - other Python classes LibTorch cannot represent (the class is named);
///  - a top-level object that is not a dict.
c10::IValue load_object(const std::string& path);

/// Extracts an ordered TensorList from a dict IValue with string keys and tensor values.
/// `what_for_errors` names the source in messages (e.g. "ckpt.pt: key 'trunk'"); the error names
/// the first key whose value is not a tensor and the type found.
TensorList to_tensor_list(const c10::IValue& dict, const std::string& what_for_errors);

/// Returns dict[key] for a string-keyed dict IValue, or throws instinct::Error
/// "<what_for_errors>: missing key '<key>' (keys: a, b, ...)".
c10::IValue dict_get(const c10::IValue& dict, const std::string& key,
                     const std::string& what_for_errors);

}  // namespace instinct::io
