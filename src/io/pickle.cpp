#include "instinct/io/pickle.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "instinct/common/error.h"
#include "io/printable.h"

namespace instinct::io {
namespace {

const std::vector<std::pair<std::string, at::ScalarType>>& storage_classes() {
  static const std::vector<std::pair<std::string, at::ScalarType>> m = {
      {"FloatStorage", at::kFloat},     {"DoubleStorage", at::kDouble},        {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong},          {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},     {"CharStorage", at::kChar},            {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool},       {"ComplexFloatStorage", at::kComplexFloat},
      {"ComplexDoubleStorage", at::kComplexDouble}, {"UntypedStorage", at::kByte}};
  return m;
}

// The Python globals torch.save writes for tensors and plain values (what
// torch.load(weights_only=True) accepts); any other name is refused where it is read.
bool allowed_global(const std::string& g) {
  static const std::set<std::string> names = [] {
    std::set<std::string> n = {
        "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state", "torch._tensor._rebuild_from_type_v2", "torch.Tensor",
        "torch.nn.parameter.Parameter", "collections.OrderedDict", "torch.Size", "torch.device",
        "_codecs.encode",  // bytes in protocol 2
    };
    for (const auto& [c, t] : storage_classes()) n.insert("torch." + c);
    for (const char* d : {"float16", "float32", "float64", "bfloat16", "complex32", "complex64", "complex128", "int8",
                          "int16", "int32", "int64", "uint8", "bool"})
      n.insert(std::string("torch.") + d);
    return n;
  }();
  return names.count(g) > 0;
}

// ---- reading: a pickle interpreter for what torch.save writes ----

class Unpickler {
 public:
  Unpickler(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}

  // Values may form cycles (a list appended to itself), also ones no longer on the stack or memo when
  // an error is thrown: the links of every value pushed are cut so they are freed; after a successful
  // run the tree under the root is kept.
  ~Unpickler() { dismantle(pushed_, done_ ? &tree_ : nullptr); }

  PyPtr run() {
    for (;;) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                       // PROTO
        case 0x95: take(8); break;                      // FRAME
        case '.': {                                     // STOP
          need(1, "STOP");
          auto root = pop();
          check_tree(root);
          done_ = true;
          return root;
        }
        case '}': push(PyValue::make_dict()); break;    // EMPTY_DICT
        case ']': push(PyValue::make_list({})); break;  // EMPTY_LIST
        case ')': push(PyValue::make_tuple({})); break; // EMPTY_TUPLE
        case '(': marks_.push_back(stack_.size()); break;
        case 't': push(PyValue::make_tuple(pop_mark())); break;
        case 'l': push(PyValue::make_list(pop_mark())); break;
        case 'd': {
          auto d = PyValue::make_dict();
          auto v = pop_mark();
          bad(v.size() % 2 != 0, "DICT with an odd number of items");
          for (size_t i = 0; i < v.size(); i += 2) d->dict.emplace_back(v[i], v[i + 1]);
          push(d);
          break;
        }
        case 0x85: case 0x86: case 0x87: {               // TUPLE1..3
          const size_t k = op - 0x84u;
          need(k, "TUPLEn");
          std::vector<PyPtr> v(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
          stack_.resize(stack_.size() - k);
          push(PyValue::make_tuple(std::move(v)));
          break;
        }
        case 'a': {
          auto v = pop();
          list_top("APPEND")->items.push_back(v);
          break;
        }
        case 'e': {
          auto v = pop_mark();
          auto l = list_top("APPENDS");
          l->items.insert(l->items.end(), v.begin(), v.end());
          break;
        }
        case 's': {
          auto v = pop();
          auto k = pop();
          dict_top("SETITEM")->dict.emplace_back(k, v);
          break;
        }
        case 'u': {
          auto v = pop_mark();
          bad(v.size() % 2 != 0, "SETITEMS with an odd number of items");
          auto d = dict_top("SETITEMS");
          for (size_t i = 0; i < v.size(); i += 2) d->dict.emplace_back(v[i], v[i + 1]);
          break;
        }
        case 'q': memo_[byte()] = top("BINPUT"); break;
        case 'r': memo_[u32()] = top("LONG_BINPUT"); break;
        case 0x94: memo_[uint32_t(memo_.size())] = top("MEMOIZE"); break;
        case 'h': push(memo(byte())); break;
        case 'j': push(memo(u32())); break;
        case '0': pop(); break;
        case '2': push(top("DUP")); break;
        case 'c': {                                                      // GLOBAL
          const size_t at = pos_ - 1;
          std::string mod = line();
          push(global(mod + "." + line(), at));
          break;
        }
        case 0x93: {                                                     // STACK_GLOBAL
          auto name = pop(), mod = pop();
          bad(!mod->is_str() || !name->is_str(), "STACK_GLOBAL of a " + mod->type_name() + " and a " + name->type_name());
          push(global(mod->s + "." + name->s, pos_ - 1));
          break;
        }
        case 'Q': push(persistent(pop())); break;                         // BINPERSID
        case 'R': {                                                      // REDUCE
          auto args = pop();
          auto fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 0x81: {                                                     // NEWOBJ
          auto args = pop();
          auto cls = pop();
          push(reduce(cls, args));
          break;
        }
        case 'b': pop(); top("BUILD"); break;  // BUILD: state (e.g. an OrderedDict's _metadata) dropped
        case 'J': { int32_t v; std::memcpy(&v, take(4), 4); push(PyValue::integer(v)); break; }
        case 'K': push(PyValue::integer(byte())); break;
        case 'M': { uint16_t v; std::memcpy(&v, take(2), 2); push(PyValue::integer(v)); break; }
        case 0x8a: push(PyValue::integer(long_bytes(byte()))); break;
        case 0x8b: push(PyValue::integer(long_bytes(u32()))); break;
        case 'G': {
          const uint8_t* b = take(8);
          uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = u << 8 | b[k];
          double d;
          std::memcpy(&d, &u, 8);
          push(PyValue::real(d));
          break;
        }
        case 'X': case 'T': { uint32_t len = u32(); push(PyValue::str(std::string(reinterpret_cast<const char*>(take(len)), len))); break; }
        case 0x8c: case 'U': { uint8_t len = byte(); push(PyValue::str(std::string(reinterpret_cast<const char*>(take(len)), len))); break; }
        case 0x8d: { uint64_t len; std::memcpy(&len, take(8), 8); push(PyValue::str(std::string(reinterpret_cast<const char*>(take(len)), len))); break; }
        case 'B': case 'C': {
          uint32_t len = op == 'B' ? u32() : byte();
          auto v = PyValue::str(std::string(reinterpret_cast<const char*>(take(len)), len));
          v->kind = PyValue::Kind::Bytes;
          push(v);
          break;
        }
        case 'N': push(PyValue::none()); break;
        case 0x88: push(PyValue::boolean(true)); break;
        case 0x89: push(PyValue::boolean(false)); break;
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail(path_, ": corrupt or unsupported data.pkl: pickle opcode ", hex, " at byte ", pos_ - 1,
               ", which torch.save never writes; expected a file written by torch.save");
        }
      }
    }
  }

 private:
  [[noreturn]] void corrupt(const std::string& what) {
    fail(path_, ": corrupt data.pkl (", what, " at byte ", pos_, "); expected a file written by torch.save");
  }
  void bad(bool cond, const std::string& what) {
    if (cond) corrupt(what);
  }
  uint8_t byte() { return *take(1); }
  uint32_t u32() {
    uint32_t v;
    std::memcpy(&v, take(4), 4);
    return v;
  }
  const uint8_t* take(uint64_t n) {
    bad(n > n_ - pos_, "unexpected end");
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  std::string line() {
    std::string s;
    for (;;) {
      char c = static_cast<char>(byte());
      if (c == '\n') return s;
      s += c;
    }
  }
  int64_t long_bytes(uint64_t n) {
    INSTINCT_CHECK(n <= 8, path_, ": data.pkl holds an integer wider than 64 bits (at byte ", pos_,
                   "); expected values that fit in int64");
    const uint8_t* b = take(n);
    uint64_t u = 0;
    for (uint64_t k = 0; k < n; ++k) u |= uint64_t(b[k]) << (8 * k);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~uint64_t(0) << (8 * n);  // sign-extend
    return static_cast<int64_t>(u);
  }
  void need(size_t k, const char* what) {
    const size_t base = marks_.empty() ? 0 : marks_.back();
    bad(stack_.size() < base + k, std::string("stack underflow in ") + what);
  }
  void push(PyPtr v) {
    pushed_.push_back(v);
    stack_.push_back(std::move(v));
  }
  PyPtr pop() {
    need(1, "pop");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PyPtr top(const char* what) {
    need(1, what);
    return stack_.back();
  }
  std::vector<PyPtr> pop_mark() {
    bad(marks_.empty(), "missing MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyPtr> v(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return v;
  }
  PyPtr memo(uint32_t k) {
    auto it = memo_.find(k);
    bad(it == memo_.end(), "memo key " + std::to_string(k) + " not set");
    return it->second;
  }
  PyPtr list_top(const char* what) {
    auto l = top(what);
    bad(l->kind != PyValue::Kind::List, std::string(what) + " on a " + l->type_name());
    return l;
  }
  PyPtr dict_top(const char* what) {
    auto d = top(what);
    bad(d->kind != PyValue::Kind::Dict, std::string(what) + " on a " + d->type_name());
    return d;
  }
  // The object tree is what its users may walk recursively and expand (memo references copied
  // wherever they occur): no cycles, at most kMaxDepth levels, and at most as many nodes once
  // expanded as a few per byte of pickle.
  void check_tree(const PyPtr& root) {
    static constexpr int kMaxDepth = 1000;
    const uint64_t max_nodes = std::max<uint64_t>(uint64_t(1) << 20, 8 * uint64_t(n_));
    struct Info {
      int state = 0;  // 1: on the path, 2: done
      int depth = 0;
      uint64_t nodes = 0;
    };
    std::unordered_map<const PyValue*, Info> info;
    auto children = [](const PyValue* v) {
      std::vector<const PyValue*> c;
      for (const auto& x : v->items) c.push_back(x.get());
      for (const auto& [k, x] : v->dict) c.push_back(k.get()), c.push_back(x.get());
      return c;
    };
    std::vector<std::pair<const PyValue*, bool>> todo = {{root.get(), false}};
    while (!todo.empty()) {
      auto [v, leaving] = todo.back();
      todo.pop_back();
      Info& in = info[v];
      if (leaving) {
        in.state = 2, in.nodes = 1;
        for (const PyValue* c : children(v)) {
          const Info& ci = info[c];
          in.depth = std::max(in.depth, ci.depth + 1);
          in.nodes = std::min(max_nodes + 1, in.nodes + ci.nodes);
        }
        INSTINCT_CHECK(in.depth <= kMaxDepth, path_, ": data.pkl nests containers more than ", kMaxDepth,
                       " levels deep; expected a file written by torch.save");
        INSTINCT_CHECK(in.nodes <= max_nodes, path_, ": data.pkl expands to more than ", max_nodes,
                       " values through shared references (", n_, " bytes of pickle); expected a file written by torch.save");
        continue;
      }
      if (in.state == 2) continue;
      INSTINCT_CHECK(in.state == 0, path_, ": data.pkl holds a container that contains itself (a ", v->type_name(),
                     "); expected a file written by torch.save");
      in.state = 1;
      todo.push_back({v, true});
      for (const PyValue* c : children(v))
        if (info[c].state != 2) todo.push_back({c, false});
    }
    for (const auto& kv : info) tree_.insert(kv.first);
  }

  // Frees the values reachable from `roots` (except those in `keep`) one node at a time.
  static void dismantle(const std::vector<PyPtr>& roots, const std::unordered_set<const PyValue*>* keep) {
    std::vector<PyPtr> all;
    std::unordered_set<const PyValue*> seen;
    auto visit = [&](const PyPtr& v) {
      if (v && !(keep && keep->count(v.get())) && seen.insert(v.get()).second) all.push_back(v);
    };
    for (const auto& r : roots) visit(r);
    for (size_t i = 0; i < all.size(); ++i) {
      for (const auto& x : all[i]->items) visit(x);
      for (const auto& [k, x] : all[i]->dict) visit(k), visit(x);
    }
    for (auto& v : all) v->items.clear(), v->dict.clear();
  }

  PyPtr global(const std::string& name, size_t at) {
    INSTINCT_CHECK(allowed_global(name), path_, ": data.pkl names the Python global '", printable(name), "' (byte ", at,
                   "), which torch.save never writes for dense tensors and plain values; refusing the file (nothing was "
                   "executed)", name.rfind("numpy.", 0) == 0 ? "; save numpy values as Python numbers or tensors" : "");
    auto g = std::make_shared<PyValue>();
    g->kind = PyValue::Kind::Global;
    g->s = name;
    return g;
  }
  std::vector<int64_t> ints(const PyPtr& t, const char* what) {
    bad(!t || t->kind != PyValue::Kind::Tuple, std::string("tensor ") + what + " is not a tuple");
    std::vector<int64_t> v;
    for (const auto& x : t->items) {
      bad(x->kind != PyValue::Kind::Int, std::string("tensor ") + what + " holds a non-integer");
      v.push_back(x->i);
    }
    return v;
  }

  PyPtr persistent(const PyPtr& pid) {
    bad(pid->kind != PyValue::Kind::Tuple || pid->items.size() < 5 || !pid->items[0]->is_str() ||
            pid->items[0]->s != "storage",
        "persistent id is not a ('storage', ...) tuple");
    const auto& cls = pid->items[1];
    bad(cls->kind != PyValue::Kind::Global, "storage type is not a class");
    auto st = std::make_shared<PyValue>();
    st->kind = PyValue::Kind::Storage;
    bool known = false;
    for (const auto& [n, t] : storage_classes())
      if ("torch." + n == cls->s) st->tensor.dtype = t, known = true;
    INSTINCT_CHECK(known, path_, ": storage of type '", cls->s, "' is not supported; expected one of the dense "
                   "CPU/CUDA storage types (FloatStorage, HalfStorage, BFloat16Storage, ...)");
    bad(!pid->items[2]->is_str() || !pid->items[3]->is_str() || pid->items[4]->kind != PyValue::Kind::Int,
        "malformed storage reference");
    TensorRef& r = st->tensor;
    r.storage = pid->items[2]->s;
    r.location = pid->items[3]->s;
    r.storage_numel = pid->items[4]->i;
    int64_t bytes = 0;
    INSTINCT_CHECK(r.storage_numel >= 0 && !__builtin_mul_overflow(r.storage_numel, int64_t(c10::elementSize(r.dtype)), &bytes),
                   path_, ": storage '", printable(r.storage), "' claims ", r.storage_numel, " elements of ",
                   c10::toString(r.dtype), "; expected a count from 0 to 2^63 bytes; the archive is corrupt");
    // One storage record has one dtype and one size, however many tensors view it.
    auto [it, fresh] = storages_.emplace(r.storage, std::make_pair(r.dtype, r.storage_numel));
    INSTINCT_CHECK(fresh || it->second == std::make_pair(r.dtype, r.storage_numel), path_, ": storage '",
                   printable(r.storage), "' is declared as ", it->second.second, " x ", c10::toString(it->second.first),
                   " and as ", r.storage_numel, " x ", c10::toString(r.dtype), "; the archive is corrupt");
    return st;
  }

  // A tensor's layout lies inside its storage: sizes and strides >= 0, numel * element size and the
  // last element's index computed without int64 overflow.
  void check_layout(const TensorRef& r) {
    auto where = [&] { return path_ + ": tensor on storage '" + printable(r.storage) + "'"; };
    INSTINCT_CHECK(r.sizes.size() == r.strides.size(), where(), " has ", r.sizes.size(), " sizes and ", r.strides.size(),
                   " strides; the archive is corrupt");
    INSTINCT_CHECK(r.offset >= 0, where(), " has storage offset ", r.offset, "; expected >= 0; the archive is corrupt");
    int64_t numel = 1, last = r.offset;
    bool overflow = false;
    for (size_t d = 0; d < r.sizes.size(); ++d) {
      INSTINCT_CHECK(r.sizes[d] >= 0 && r.strides[d] >= 0, where(), " has size ", r.sizes[d], " and stride ", r.strides[d],
                     " in dimension ", d, "; expected non-negative values; the archive is corrupt");
      overflow |= __builtin_mul_overflow(numel, r.sizes[d], &numel);
    }
    int64_t bytes = 0;
    overflow |= __builtin_mul_overflow(numel, int64_t(c10::elementSize(r.dtype)), &bytes);
    INSTINCT_CHECK(!overflow, where(), " has shape ", shape_text(r.sizes),
                   ", whose element count overflows int64; the archive is corrupt");
    if (numel == 0) {
      INSTINCT_CHECK(r.offset <= r.storage_numel, where(), " starts at element ", r.offset, " of a storage with ",
                     r.storage_numel, " elements; the archive is corrupt");
      return;
    }
    for (size_t d = 0; d < r.sizes.size() && !overflow; ++d) {
      int64_t step = 0;
      overflow |= __builtin_mul_overflow(r.sizes[d] - 1, r.strides[d], &step) || __builtin_add_overflow(last, step, &last);
    }
    INSTINCT_CHECK(!overflow && last < r.storage_numel, where(), " (shape ", shape_text(r.sizes), ", strides ",
                   shape_text(r.strides), ", offset ", r.offset, ") reaches ",
                   overflow ? std::string("past element 2^63") : "element " + std::to_string(last), " of a storage with ",
                   r.storage_numel, " elements; the archive is corrupt");
  }
  static std::string shape_text(const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  }

  PyPtr reduce(const PyPtr& fn, const PyPtr& args) {
    bad(fn->kind != PyValue::Kind::Global, "REDUCE of a " + fn->type_name());
    bad(args->kind != PyValue::Kind::Tuple, "REDUCE arguments are not a tuple");
    const std::string& g = fn->s;
    const auto& a = args->items;
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      bad(a.size() < 4 || a[0]->kind != PyValue::Kind::Storage, "malformed _rebuild_tensor arguments");
      TensorRef r = a[0]->tensor;
      bad(a[1]->kind != PyValue::Kind::Int, "tensor storage offset is not an integer");
      r.offset = a[1]->i;
      r.sizes = ints(a[2], "size");
      r.strides = ints(a[3], "stride");
      r.requires_grad = a.size() > 4 && a[4]->kind == PyValue::Kind::Bool && a[4]->b;
      check_layout(r);
      return PyValue::make_tensor(r);
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      bad(a.empty() || !a[0]->is_tensor(), "malformed _rebuild_parameter arguments");
      auto t = std::make_shared<PyValue>(*a[0]);
      t->tensor.requires_grad = a.size() > 1 && a[1]->kind == PyValue::Kind::Bool && a[1]->b;
      return t;
    }
    if (g == "torch._tensor._rebuild_from_type_v2") {
      bad(a.size() < 3, "malformed _rebuild_from_type_v2 arguments");
      return reduce(a[0], a[2]);
    }
    if (g == "collections.OrderedDict") {
      auto d = PyValue::make_dict();
      if (!a.empty() && a[0]->kind == PyValue::Kind::List)
        for (const auto& kv : a[0]->items) {
          bad(kv->kind != PyValue::Kind::Tuple || kv->items.size() != 2, "malformed dict items");
          d->dict.emplace_back(kv->items[0], kv->items[1]);
        }
      return d;
    }
    auto o = std::make_shared<PyValue>();
    o->kind = PyValue::Kind::Object;
    o->s = g;
    o->items = a;
    return o;
  }

  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const std::string& path_;
  std::vector<PyPtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, PyPtr> memo_;
  std::unordered_map<std::string, std::pair<at::ScalarType, int64_t>> storages_;  // key -> (dtype, numel)
  std::unordered_set<const PyValue*> tree_;  // the nodes under the returned root
  bool done_ = false;
  std::vector<PyPtr> pushed_;  // every value ever pushed (see ~Unpickler)
};

// ---- writing ----

class Pickler {
 public:
  std::string run(const PyPtr& root) {
    op(0x80);
    op(2);
    value(root);
    op('.');
    return std::move(out_);
  }

 private:
  void op(uint8_t b) { out_ += static_cast<char>(b); }
  void raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  void str(const std::string& s) {
    op('X');
    const uint32_t n = static_cast<uint32_t>(s.size());
    raw(&n, 4);
    raw(s.data(), s.size());
  }
  void global(const std::string& mod, const std::string& name) {
    op('c');
    raw(mod.data(), mod.size());
    op('\n');
    raw(name.data(), name.size());
    op('\n');
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      op(static_cast<uint8_t>(v));
    } else if (v >= 0 && v < 65536) {
      op('M');
      const uint16_t u = static_cast<uint16_t>(v);
      raw(&u, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      const int32_t u = static_cast<int32_t>(v);
      raw(&u, 4);
    } else {  // LONG1: minimal two's-complement little-endian bytes
      uint8_t b[8];
      std::memcpy(b, &v, 8);
      int n = 8;
      while (n > 1 && ((b[n - 1] == 0 && !(b[n - 2] & 0x80)) || (b[n - 1] == 0xff && (b[n - 2] & 0x80)))) --n;
      op(0x8a);
      op(static_cast<uint8_t>(n));
      raw(b, static_cast<size_t>(n));
    }
  }
  void int_tuple(const std::vector<int64_t>& v) {
    op('(');
    for (auto x : v) integer(x);
    op('t');
  }
  void value(const PyPtr& v) {
    using K = PyValue::Kind;
    switch (v->kind) {
      case K::None: op('N'); return;
      case K::Bool: op(v->b ? 0x88 : 0x89); return;
      case K::Int: integer(v->i); return;
      case K::Float: {
        uint64_t u;
        std::memcpy(&u, &v->f, 8);
        op('G');
        for (int k = 7; k >= 0; --k) op(static_cast<uint8_t>(u >> (8 * k)));
        return;
      }
      case K::Str: str(v->s); return;
      case K::Bytes: {
        op('B');
        const uint32_t n = static_cast<uint32_t>(v->s.size());
        raw(&n, 4);
        raw(v->s.data(), v->s.size());
        return;
      }
      case K::Tuple:
        op('(');
        for (const auto& x : v->items) value(x);
        op('t');
        return;
      case K::List:
        op(']');
        for (size_t i = 0; i < v->items.size(); i += 1000) {
          op('(');
          for (size_t j = i; j < std::min(v->items.size(), i + 1000); ++j) value(v->items[j]);
          op('e');
        }
        return;
      case K::Dict:
        op('}');
        for (size_t i = 0; i < v->dict.size(); i += 1000) {
          op('(');
          for (size_t j = i; j < std::min(v->dict.size(), i + 1000); ++j) {
            value(v->dict[j].first);
            value(v->dict[j].second);
          }
          op('u');
        }
        return;
      case K::Tensor: {
        const TensorRef& r = v->tensor;
        global("torch._utils", "_rebuild_tensor_v2");
        op('(');
        op('(');
        str("storage");
        global("torch", storage_class_name(r.dtype));
        str(r.storage);
        str(r.location);
        integer(r.storage_numel);
        op('t');
        op('Q');
        integer(r.offset);
        int_tuple(r.sizes);
        int_tuple(r.strides);
        op(r.requires_grad ? 0x88 : 0x89);
        global("collections", "OrderedDict");
        op(')');
        op('R');
        op('t');
        op('R');
        return;
      }
      default:
        fail("cannot write a value of type ", v->type_name(), " (", v->s,
             ") to a torch archive; expected dicts, lists, tuples, tensors, strings and numbers");
    }
  }
  std::string out_;
};

}  // namespace

int64_t TensorRef::nbytes() const {
  int64_t n = static_cast<int64_t>(c10::elementSize(dtype));
  for (auto s : sizes)
    if (__builtin_mul_overflow(n, s, &n)) fail("tensor on storage '", printable(storage), "': byte size overflows int64");
  return n;
}

PyValue::~PyValue() {
  std::vector<PyPtr> work;
  auto take = [&](PyValue& v) {
    for (auto& x : v.items) work.push_back(std::move(x));
    for (auto& [k, x] : v.dict) work.push_back(std::move(k)), work.push_back(std::move(x));
    v.items.clear();
    v.dict.clear();
  };
  take(*this);
  while (!work.empty()) {
    PyPtr p = std::move(work.back());
    work.pop_back();
    if (p && p.use_count() == 1) take(*p);  // p then dies childless: no recursion
  }
}

PyPtr PyValue::none() { return std::make_shared<PyValue>(); }
PyPtr PyValue::boolean(bool v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Bool;
  p->b = v;
  return p;
}
PyPtr PyValue::integer(int64_t v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Int;
  p->i = v;
  return p;
}
PyPtr PyValue::real(double v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Float;
  p->f = v;
  return p;
}
PyPtr PyValue::str(std::string v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Str;
  p->s = std::move(v);
  return p;
}
PyPtr PyValue::make_dict() {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Dict;
  return p;
}
PyPtr PyValue::make_list(std::vector<PyPtr> v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::List;
  p->items = std::move(v);
  return p;
}
PyPtr PyValue::make_tuple(std::vector<PyPtr> v) {
  auto p = make_list(std::move(v));
  p->kind = Kind::Tuple;
  return p;
}
PyPtr PyValue::make_tensor(TensorRef r) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Tensor;
  p->tensor = std::move(r);
  return p;
}
PyPtr PyValue::get(const std::string& key) const {
  for (const auto& [k, v] : dict)
    if (k->is_str() && k->s == key) return v;
  return nullptr;
}
std::string PyValue::type_name() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Tensor: return "tensor";
    case Kind::Global: return "class " + s;
    case Kind::Storage: return "storage";
    case Kind::Object: return s + " object";
  }
  return "?";
}

std::string storage_class_name(at::ScalarType dtype) {
  for (const auto& [n, t] : storage_classes())
    if (t == dtype && n != "UntypedStorage") return n;
  fail("dtype ", c10::toString(dtype), " has no torch storage class; expected a dense numeric dtype");
}

std::string pickle_object(const PyPtr& root) { return Pickler().run(root); }

PyPtr unpickle(const void* data, size_t size, const std::string& path) {
  return Unpickler(static_cast<const uint8_t*>(data), size, path).run();
}

}  // namespace instinct::io
