#include "instinct/io/archive.h"

#include <map>

#include "instinct/common/error.h"
#include "instinct/io/torch_zip.h"

namespace instinct::io {
namespace {

// Python-side name of an IValue's type, for messages.
std::string type_name(const c10::IValue& v) {
  if (v.isGenericDict()) return "dict";
  if (v.isList()) return "list";
  if (v.isTuple()) return "tuple";
  if (v.isString()) return "str";
  if (v.isInt()) return "int";
  if (v.isDouble()) return "float";
  if (v.isBool()) return "bool";
  if (v.isNone()) return "None";
  if (v.isTensor()) return "tensor";
  return v.tagKind();
}

// IValue -> PyValue tree, tensors written to `w` as they are met.
class ToPy {
 public:
  ToPy(ArchiveWriter& w, const std::string& path) : w_(w), path_(path) {}

  PyPtr run(const c10::IValue& v, const std::string& where) {
    if (v.isTensor()) return tensor(v.toTensor(), where);
    if (v.isGenericDict()) {
      auto d = PyValue::make_dict();
      for (const auto& kv : v.toGenericDict()) {
        INSTINCT_CHECK(kv.key().isString(), path_, ": cannot save dict at ", where, ": key of type ",
                       type_name(kv.key()), ", expected string keys");
        const std::string& k = kv.key().toStringRef();
        d->dict.emplace_back(PyValue::str(k), run(kv.value(), where + "." + k));
      }
      return d;
    }
    if (v.isList() || v.isTuple()) {
      const c10::ArrayRef<c10::IValue> items = v.isList() ? v.toListRef() : v.toTupleRef().elements().asArrayRef();
      std::vector<PyPtr> out;
      out.reserve(items.size());
      for (size_t i = 0; i < items.size(); ++i) out.push_back(run(items[i], where + "[" + std::to_string(i) + "]"));
      return v.isList() ? PyValue::make_list(std::move(out)) : PyValue::make_tuple(std::move(out));
    }
    if (v.isString()) return PyValue::str(v.toStringRef());
    if (v.isInt()) return PyValue::integer(v.toInt());
    if (v.isDouble()) return PyValue::real(v.toDouble());
    if (v.isBool()) return PyValue::boolean(v.toBool());
    if (v.isNone()) return PyValue::none();
    fail(path_, ": cannot save value of type ", type_name(v), " at ", where,
         "; expected dict, list, tuple, tensor, string, int, float, bool or None");
  }

 private:
  PyPtr tensor(const at::Tensor& t, const std::string& where) {
    INSTINCT_CHECK(t.layout() == at::kStrided && !t.is_quantized(), path_, ": cannot save tensor at ", where,
                   ": sparse/quantized tensors are not supported; expected dense tensors");
    try {
      storage_class_name(t.scalar_type());
    } catch (const Error& e) {
      fail(path_, ": cannot save tensor at ", where, ": ", e.what());
    }
    return w_.add_tensor(t);
  }

  ArchiveWriter& w_;
  const std::string& path_;
};

// LazyArchive tree -> IValue; tensors that share a storage record share one storage.
class ToIValue {
 public:
  explicit ToIValue(const LazyArchive& a) : a_(a) {}

  c10::IValue run(const PyPtr& v, const std::string& where) {
    using K = PyValue::Kind;
    switch (v->kind) {
      case K::None: return c10::IValue();
      case K::Bool: return v->b;
      case K::Int: return v->i;
      case K::Float: return v->f;
      case K::Str: return v->s;
      case K::Tensor: return tensor(v->tensor);
      case K::List: {
        c10::impl::GenericList l(c10::AnyType::get());
        l.reserve(v->items.size());
        for (size_t i = 0; i < v->items.size(); ++i) l.push_back(run(v->items[i], where + "[" + std::to_string(i) + "]"));
        return l;
      }
      case K::Tuple: {
        std::vector<c10::IValue> e;
        e.reserve(v->items.size());
        for (size_t i = 0; i < v->items.size(); ++i) e.push_back(run(v->items[i], where + "[" + std::to_string(i) + "]"));
        return c10::ivalue::Tuple::create(std::move(e));
      }
      case K::Dict: return dict(*v, where);
      case K::Global:
      case K::Object:
        fail(a_.path(), ": contains Python class '", v->s, "' at ", where, ", which is not loaded (no Python code is run)",
             "; expected only dicts, lists, tuples, tensors, strings, numbers, bools and None");
      default:
        fail(a_.path(), ": contains a ", v->type_name(), " at ", where,
             ", which is not loaded; expected only dicts, lists, tuples, tensors, strings, numbers, bools and None");
    }
  }

 private:
  c10::IValue dict(const PyValue& v, const std::string& where) {
    bool all_int = !v.dict.empty();
    for (const auto& [k, x] : v.dict) {
      INSTINCT_CHECK(k->is_str() || k->kind == PyValue::Kind::Int, a_.path(), ": dict at ", where, " has a key of type ",
                     k->type_name(), ", expected string or int keys");
      all_int &= k->kind == PyValue::Kind::Int;
    }
    c10::impl::GenericDict d(all_int ? c10::TypePtr(c10::IntType::get()) : c10::TypePtr(c10::StringType::get()),
                             c10::AnyType::get());
    for (const auto& [k, x] : v.dict) {
      INSTINCT_CHECK(k->is_str() != all_int, a_.path(), ": dict at ", where, " mixes string and int keys, expected one kind");
      if (all_int) d.insert_or_assign(k->i, run(x, where + "[" + std::to_string(k->i) + "]"));
      else d.insert_or_assign(k->s, run(x, where + "." + k->s));
    }
    return d;
  }

  at::Tensor tensor(const TensorRef& r) {
    at::Tensor& s = storages_[{r.storage, r.dtype}];
    if (!s.defined()) {
      TensorRef whole = r;
      whole.offset = 0;
      whole.sizes = {r.storage_numel};
      whole.strides = {1};
      s = a_.load(whole);
    }
    return s.as_strided(r.sizes, r.strides, r.offset);
  }

  const LazyArchive& a_;
  std::map<std::pair<std::string, at::ScalarType>, at::Tensor> storages_;
};

}  // namespace

void save_object(const std::string& path, const c10::IValue& obj) {
  ArchiveWriter w(path);
  w.finish(ToPy(w, path).run(obj, "<root>"));
}

c10::IValue tensor_dict(const TensorList& tensors) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [name, t] : tensors) {
    INSTINCT_CHECK(!d.contains(name), "tensor_dict: duplicate key '", name, "'; expected unique names");
    d.insert(name, t);
  }
  return d;
}

c10::IValue load_object(const std::string& path) {
  LazyArchive a(path);
  INSTINCT_CHECK(a.root()->is_dict(), path, ": top-level object is a ", a.root()->type_name(),
                 ", expected a dict (torch.save({...}, path))");
  return ToIValue(a).run(a.root(), "<root>");
}

TensorList to_tensor_list(const c10::IValue& dict, const std::string& what_for_errors) {
  INSTINCT_CHECK(dict.isGenericDict(), what_for_errors, ": is a ", type_name(dict),
                 ", expected a dict of name -> tensor");
  TensorList out;
  for (const auto& kv : dict.toGenericDict()) {
    INSTINCT_CHECK(kv.key().isString(), what_for_errors, ": has a key of type ", type_name(kv.key()),
                   ", expected string keys");
    INSTINCT_CHECK(kv.value().isTensor(), what_for_errors, ": value of key '", kv.key().toStringRef(),
                   "' is a ", type_name(kv.value()), ", expected a tensor");
    out.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
  }
  return out;
}

c10::IValue dict_get(const c10::IValue& dict, const std::string& key,
                     const std::string& what_for_errors) {
  INSTINCT_CHECK(dict.isGenericDict(), what_for_errors, ": is a ", type_name(dict), ", expected a dict");
  const auto d = dict.toGenericDict();
  auto it = d.find(key);
  if (it != d.end()) return it->value();
  std::string keys;
  for (const auto& kv : d) {
    if (!keys.empty()) keys += ", ";
    keys += kv.key().isString() ? kv.key().toStringRef() : type_name(kv.key());
  }
  fail(what_for_errors, ": missing key '", key, "' (keys: ", keys.empty() ? "none" : keys, ")");
}

}  // namespace instinct::io
