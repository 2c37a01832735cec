#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "instinct/config/config.h"
#include "instinct/teacher/phrases.h"
#include "instinct/distill/concept.h"
#include "instinct/distill/stage_a.h"
#include "instinct/eval/evaluate.h"
#include "test_helpers.h"

using instinct::test::error_of;

using namespace instinct;

TEST(Config, YamlThenOverridesInOrder) {
  const std::string dir = test::temp_dir("cfg");
  std::ofstream(dir + "/a.yaml") << "run_dir: r1\noptim:\n  base_lr: 0.5\n  max_steps: 7\nstudent:\n  preset: custom\n";
  distill::StageAConfig c;
  config::load(dir + "/a.yaml", {"optim.max_steps=9", "data.root=/x", "ema.enabled=true", "optim.base_lr=2e-4"}, c);
  EXPECT_EQ(c.run_dir, "r1");
  EXPECT_EQ(c.optim.max_steps, 9);
  EXPECT_DOUBLE_EQ(c.optim.base_lr, 2e-4);
  EXPECT_EQ(c.data.root, "/x");
  EXPECT_TRUE(c.ema.enabled);
  EXPECT_EQ(c.student.preset, "custom");
  EXPECT_EQ(c.optim.grad_clip, 5.0);  // untouched default
}

TEST(Config, UnknownKeyNamesNearestValidKey) {
  distill::StageAConfig c;
  auto msg = error_of([&] { config::load("", {"optim.base_lrr=1"}, c); });
  EXPECT_NE(msg.find("unknown key 'optim.base_lrr'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'optim.base_lr'"), std::string::npos) << msg;
  msg = error_of([&] { config::load("", {"optim.max_step=1"}, c); });
  EXPECT_NE(msg.find("optim.max_steps"), std::string::npos) << msg;
  msg = error_of([&] { config::load("", {"optm.epochs=1"}, c); });
  EXPECT_NE(msg.find("optim.epochs"), std::string::npos) << msg;
}

TEST(Config, TypeErrorsNameKeyAndValue) {
  distill::StageAConfig c;
  auto msg = error_of([&] { config::load("", {"optim.base_lr=fast"}, c); });
  EXPECT_NE(msg.find("optim.base_lr"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fast"), std::string::npos) << msg;
  msg = error_of([&] { config::load("", {"teacher=3"}, c); });
  EXPECT_NE(msg.find("'teacher'"), std::string::npos) << msg;
  msg = error_of([&] { config::load("", {"nokey"}, c); });
  EXPECT_NE(msg.find("key.sub=value"), std::string::npos) << msg;
}

TEST(Config, YamlSyntaxErrorNamesFileAndLine) {
  const std::string dir = test::temp_dir("cfgsyn");
  std::ofstream(dir + "/bad.yaml") << "optim:\n  base_lr: [1, 2\n";
  distill::StageAConfig c;
  auto msg = error_of([&] { config::load(dir + "/bad.yaml", {}, c); });
  EXPECT_NE(msg.find("bad.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line"), std::string::npos) << msg;
  msg = error_of([&] { config::load(dir + "/missing.yaml", {}, c); });
  EXPECT_NE(msg.find("missing.yaml"), std::string::npos) << msg;
}

TEST(Config, ResolvedYamlRoundTrips) {
  distill::StageAConfig a;
  config::load("", {"optim.max_steps=123", "data.root=imgs", "student.img_size=224"}, a);
  const std::string text = config::to_yaml(a);
  distill::StageAConfig b;
  config::from_yaml(YAML::Load(text), b);
  EXPECT_EQ(config::to_yaml(b), text);
  EXPECT_EQ(b.optim.max_steps, 123);
  EXPECT_NE(text.find("# "), std::string::npos);  // doc comments are emitted
}

TEST(Config, EveryShippedConfigParses) {
  const std::string root = INSTINCT_SOURCE_DIR "/configs";
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    const auto name = e.path().filename().string();
    if (e.is_directory() && name == "vocab") {  // vocabularies for the concept bank (scripts/export_sam3.py --vocab)
      for (const auto& v : std::filesystem::directory_iterator(e.path())) {
        std::vector<std::string> phrases;
        EXPECT_NO_THROW(phrases = teacher::read_vocabulary(v.path().string())) << v.path();
        if (v.path().filename() == "coco80.txt") EXPECT_EQ(phrases.size(), 80u);
      }
      continue;
    }
    if (name.rfind("stageA", 0) == 0) {
      distill::StageAConfig c;
      EXPECT_NO_THROW(config::load(e.path().string(), {}, c)) << name;
    } else if (name.rfind("concept", 0) == 0) {
      distill::ConceptConfig c;
      EXPECT_NO_THROW(config::load(e.path().string(), {}, c)) << name;
    } else if (name.rfind("eval", 0) == 0) {
      eval::EvalConfig c;
      EXPECT_NO_THROW(config::load(e.path().string(), {}, c)) << name;
      EXPECT_NO_THROW(eval::validate(c.protocol)) << name;
    } else {
      ADD_FAILURE() << "no parser test for config " << name;
    }
    ++n;
  }
  EXPECT_GE(n, 4);
}

// Stage A and concept read the trainer's block from one declaration (distill::TrainerConfig): the
// same keys with the same documentation, only the recipe defaults differ.
TEST(Config, TrainersShareOneDocumentedBlock) {
  distill::StageAConfig a;
  distill::ConceptConfig c;
  EXPECT_EQ(a.run_dir, "runs/stageA");
  EXPECT_EQ(c.run_dir, "runs/concept");
  EXPECT_EQ(a.batch_size, 8);
  EXPECT_EQ(c.batch_size, 4);
  EXPECT_TRUE(a.batchnorm_stats);
  EXPECT_FALSE(c.batchnorm_stats);
  auto lines = [](const std::string& yaml) {
    std::map<std::string, std::string> m;  // top-level and nested lines by their text before ':'
    std::istringstream in(yaml);
    for (std::string l; std::getline(in, l);)
      if (l.find(':') != std::string::npos) m[l.substr(0, l.find(':'))] += l + "\n";
    return m;
  };
  c.run_dir = a.run_dir;
  c.batch_size = a.batch_size;
  c.batchnorm_stats = a.batchnorm_stats;
  const auto la = lines(config::to_yaml(a)), lc = lines(config::to_yaml(c));
  int shared = 0;
  for (const char* k : {"run_dir", "device", "precision", "seed", "threads", "batch_size", "batchnorm_stats", "profile",
                        "teacher", "  bundle", "student", "  img_size", "init", "  from", "data", "  eval_images",
                        "optim", "  base_lr", "ema", "  decay", "eval", "  every", "checkpoint", "  keep_last", "log",
                        "distributed", "  timeout_s"}) {
    ASSERT_TRUE(la.count(k) && lc.count(k)) << k;
    EXPECT_EQ(la.at(k), lc.at(k)) << k;
    if (la.at(k).back() == '\n' && la.at(k).find(":\n") == std::string::npos)  // a leaf, not a block header
      EXPECT_NE(la.at(k).find("# "), std::string::npos) << "undocumented: " << la.at(k);
    ++shared;
  }
  EXPECT_EQ(shared, 27);
  EXPECT_TRUE(la.count("cache") && !lc.count("cache"));
  EXPECT_TRUE(lc.count("concepts") && !la.count("concepts"));
}
